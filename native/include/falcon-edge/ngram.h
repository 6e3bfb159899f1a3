// Prompt-lookup (n-gram) proposer: finds the longest recent suffix match in the context and
// offers the continuations that followed it as branches of a tree (the paper's PLD baseline). It
// drafts for free, so the engine runs it on every cycle, alone or merged into the drafter's tree.
#pragma once

#include "falcon-edge/acceptance.h"
#include "falcon-edge/proposer.h"

namespace fe {

// one continuation of the context's suffix
struct ngram_continuation {
    int32_t n_match = 0;             // length of the matched suffix
    std::vector<llama_token> tokens; // what followed the match [<= depth]
};

class ngram_proposer : public proposer {
public:
    ngram_proposer();

    // Branches are the distinct continuations of the most recent matches of the longest suffix
    // (ngram_max down to ngram_min tokens), most recent first, each a chain of up to depth_max
    // tokens. A node's value is the product of the acceptance rates observed for its key
    // (matched length, depth) along its chain.
    void draft(const std::vector<llama_token> & tokens, int32_t n_nodes_max, const spec_params & sp,
               const sampling_params & smp, rng & r, tree & out) override;

    void observe(const tree & t, const std::vector<int32_t> & path) override;

    // a new request: the acceptance statistics start its own trials
    int32_t reset(int32_t n_keep) override;

private:
    acceptance_stats stats_;
};

// continuations of the suffix of `tokens`: for the longest n in [n_min, n_max] with a match, the
// tokens that followed the most recent matches (distinct first tokens, at most n_branches, each up
// to depth tokens long), most recent first
std::vector<ngram_continuation> ngram_continuations(const std::vector<llama_token> & tokens, int32_t n_min,
                                                    int32_t n_max, int32_t n_branches, int32_t depth);

} // namespace fe
