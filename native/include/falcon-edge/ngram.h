// Prompt-lookup (n-gram) proposer: finds the longest recent suffix match in the context and
// offers the continuations that followed it as branches of a tree (the paper's PLD baseline).
#pragma once

#include "falcon-edge/proposer.h"

namespace fe {

class ngram_proposer : public proposer {
public:
    // Branches are the distinct continuations of the most recent matches of the longest suffix
    // (ngram_max down to ngram_min tokens), most recent first, each a chain of up to depth_max
    // tokens. A node's value is acc^depth where acc is the running acceptance rate of n-gram drafts.
    void draft(const std::vector<llama_token> & tokens, int32_t n_nodes_max, const spec_params & sp,
               const sampling_params & smp, rng & r, tree & out) override;
};

// continuations of the suffix of `tokens`: for the longest n in [n_min, n_max] with a match, the
// tokens that followed the most recent matches (distinct first tokens, at most n_branches, each up
// to depth tokens long), most recent first
std::vector<std::vector<llama_token>> ngram_continuations(const std::vector<llama_token> & tokens, int32_t n_min,
                                                          int32_t n_max, int32_t n_branches, int32_t depth);

} // namespace fe
