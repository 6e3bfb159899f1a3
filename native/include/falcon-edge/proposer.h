// A proposer offers a token tree below the last sampled token; the engine verifies it in one
// llama_decode. Implementations: n-gram lookup (ngram.h) and the Falcon drafter (falcon-proposer.h).
#pragma once

#include "falcon-edge/params.h"
#include "falcon-edge/sampling.h"
#include "falcon-edge/tree.h"

#include "llama.h"

#include <vector>

namespace fe {

class proposer {
public:
    virtual ~proposer() = default;

    // whether accept() needs the target's post-norm hidden states
    virtual bool needs_features() const { return false; }

    // a new request keeps the committed tokens [0, n_keep) of the last one; returns how many of
    // them the proposer can still serve from its state (the engine re-evaluates the rest)
    virtual int32_t reset(int32_t n_keep) { return n_keep; }

    // newly committed pairs: feats [n, n_embd] are the target's features at consecutive positions,
    // next[i] the token that followed each of them (null feats when needs_features() is false)
    virtual void accept(const float * feats, const llama_token * next, int32_t n) {}

    // newly committed pairs before the first one the next catch-up reads (n_pairs + n_more - backlog(n_more)):
    // their next tokens only, the target computed no features for them
    virtual void accept_unread(const llama_token * next, int32_t n) {}

    // does now the work on committed pairs that the next draft() would do first, beyond what one
    // cycle of steady drafting brings (a prompt, a stretch of cycles without drafting), so that the
    // time of draft() is the proposer's cost per cycle; a cycle commits at most n_nodes_max pairs
    virtual void catch_up(int32_t n_nodes_max) {}

    // the committed pairs the next draft() (with its catch_up) must evaluate first once n_more more
    // are committed: a new prompt's, paid once
    virtual int32_t backlog(int32_t n_more) const { return 0; }

    // builds a tree below tokens.back() (the root, already sampled, not yet in the target's KV)
    // with at most n_nodes_max nodes including the root; node values estimate acceptance. `out` may
    // already hold another proposer's nodes: offers merge into them (tree_add)
    virtual void draft(const std::vector<llama_token> & tokens, int32_t n_nodes_max, const spec_params & sp,
                       const sampling_params & smp, rng & r, tree & out) = 0;

    // after each verification, a tree of the root alone included: the verified tree and its accepted
    // path (tree_path of the accepted node), to calibrate the values of the nodes this proposer
    // offered (acceptance.h; a cycle that offered nothing still ages what was learned before)
    virtual void observe(const tree & t, const std::vector<int32_t> & path) {}

    // drafter forward passes run so far (statistics); a proposer without passes drafts for free
    virtual int32_t n_passes() const { return 0; }

    // the most a node it offers is expected to be worth relative to its parent: its best calibrated
    // acceptance rate over all keys (1: nothing known bounds it)
    virtual float best_rate() const { return 1.0f; }
};

} // namespace fe
