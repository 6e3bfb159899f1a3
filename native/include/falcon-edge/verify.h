// Acceptance of a verified tree: walks from the root along children that the target agrees with
// and returns the deepest accepted node plus the token the target produces after it (the bonus).
#pragma once

#include "falcon-edge/params.h"
#include "falcon-edge/sampling.h"
#include "falcon-edge/tree.h"

#include "llama.h"

#include <functional>
#include <vector>

namespace fe {

struct walk_result {
    int32_t     node       = 0;  // deepest accepted node (0 = only the root)
    int32_t     n_accepted = 0;  // accepted draft tokens (= depth of node)
    llama_token next       = -1; // token sampled after node: the bonus, the root of the next tree
};

// Greedy (temperature <= 0): at each node take the target's choice; descend if a child carries it.
// Output is token-identical to plain greedy decoding.
//
// Stochastic (temperature > 0): multi-draft recursive rejection sampling over each node's children
// in order. Every proposer chooses its children deterministically (distinct tokens, a point mass
// each), so child c is accepted with probability p(c), and on rejection p <- normalize(p without c).
// When every child is rejected, the bonus is drawn from the residual p. This preserves the target
// distribution exactly.
//
// logits_of(u): the target's logits [n_vocab] at node u, asked for the nodes the walk reaches only
// (the root, then each accepted node), in that order; the pointer is read before the next call.
// history: committed tokens up to and including the root (for the repeat penalty).
using node_logits = std::function<const float *(int32_t node)>;
walk_result verify_tree(const tree & t, const node_logits & logits_of, int32_t n_vocab, const sampling_params & sp,
                        const std::vector<llama_token> & history, rng & r);

} // namespace fe
