// The Falcon proposer: grows a custom decoding tree from the semi-autoregressive drafter, k tokens
// per drafter pass (falcon-method.md §5; docs/drafter-format.md for the drafter's inputs).
//
// One drafting phase:
//   1. context pass: the drafter catches up with the committed pairs (the last k re-evaluated as one
//      block) and its last k output rows give the distributions of depths 1 .. k;
//   2. the k-block Cartesian structure: every combination of the top_k_draft candidates of each row
//      is a path of the block (the row-j candidates do not depend on the row-(j-1) token); a node's
//      value is the product along its path of calibrated acceptance rates, each looked up by the
//      candidate's drafter probability and depth (acceptance.h), the probability itself being the
//      prior;
//   3. each further pass expands the most valuable nodes that complete a block (depths k, 2k, ...)
//      and are at least 5% likely: one drafter block per node, all blocks of a pass in one graph,
//      giving depths +1 .. +k; no pass runs when no node qualifies.
// The engine then keeps the nodes the device can afford (cost-model.h). With a preset shape
// (spec_params.preset_*, e.g. the paper's 168-token tree) only the preset's candidate ranks are
// added and every preset node that completes a block is expanded, until the preset is complete.
// Candidates are chosen deterministically (top-k): for stochastic acceptance each is a point mass
// (verify.h).
#pragma once

#include "falcon-edge/acceptance.h"
#include "falcon-edge/drafter.h"
#include "falcon-edge/proposer.h"

#include <memory>

namespace fe {

class falcon_proposer : public proposer {
public:
    explicit falcon_proposer(std::unique_ptr<drafter> dft);

    bool needs_features() const override { return true; }
    int32_t reset(int32_t n_keep) override;
    void accept(const float * feats, const llama_token * next, int32_t n) override;
    void accept_unread(const llama_token * next, int32_t n) override { dft_->push_unread(next, n); }
    void catch_up(int32_t n_nodes_max) override { dft_->catch_up(n_nodes_max); }
    int32_t backlog(int32_t n_more) const override { return dft_->backlog(n_more); }
    void draft(const std::vector<llama_token> & tokens, int32_t n_nodes_max, const spec_params & sp,
               const sampling_params & smp, rng & r, tree & out) override;
    void observe(const tree & t, const std::vector<int32_t> & path) override;
    int32_t n_passes() const override { return n_passes_; }
    // the best key's expected rate (acceptance_stats::mean, not the optimistic rate that gets keys
    // tried) where the drafter file gives held-out rates; 1 without them (the prior of a node is then
    // its own drafter probability, which nothing bounds below 1)
    float best_rate() const override;

    const drafter & get_drafter() const { return *dft_; }

private:
    // a node that completes a block and may be expanded by a further drafter pass
    struct frontier {
        int32_t node;                 // tree node at depth L*k
        int32_t shape;                // its preset node (-1: dynamic tree)
        int32_t block;                // index of the drafter block that produced its rows (-1: the context)
        std::vector<float> feat;      // [k*n_embd] output features of that block
    };

    // the candidate ranks below one node: (rank, preset node or -1)
    std::vector<std::pair<int32_t, int32_t>> child_ranks(int32_t shape, const spec_params & sp) const;

    // adds the block of candidates below `node` from k rows of logits (the Cartesian product of the
    // top candidates, or the preset's ranks below `shape`); appends the nodes that complete the
    // block and may be expanded further to `next`
    void add_block(tree & t, int32_t node, int32_t shape, int32_t block, const float * feat, const float * logits,
                   const spec_params & sp, std::vector<frontier> & next);

    std::unique_ptr<drafter> dft_;
    acceptance_stats stats_;
    std::vector<std::vector<int32_t>> preset_children_; // [n_preset + 1]: children of each preset node, the root last
    int32_t n_passes_ = 0;
    std::vector<float> feat_, logits_; // scratch
};

} // namespace fe
