// Encodes a token tree as one llama_batch whose multi-sequence tokens give exact tree attention
// (llama-cpp-notes.md §1.2): leaf j owns seq id j, every node carries the seq ids of all leaves
// below it, node positions are n_past + depth. Requires a context with kv_unified = true and
// n_seq_max >= number of leaves.
#pragma once

#include "falcon-edge/tree.h"

#include "llama.h"

#include <vector>

namespace fe {

struct tree_batch {
    llama_batch batch = {};         // owned; rows in depth-first order
    std::vector<int32_t> row_of;    // [n_nodes] batch row of each tree node
    std::vector<int32_t> leaf_seq;  // [n_nodes] one seq id of a leaf below each node (its first)

    tree_batch() = default;
    tree_batch(const tree_batch &) = delete;
    tree_batch & operator=(const tree_batch &) = delete;
    ~tree_batch();
};

// fills `out` for tree `t` whose root sits at position n_past; every node is an output.
// Gives every leaf seq (1 .. n_leaves-1) a copy of seq 0's cells first, so all leaf seqs share the
// committed prefix. Throws std::invalid_argument if the tree has more leaves than n_seq_max.
void tree_batch_build(tree_batch & out, const tree & t, llama_pos n_past, llama_context * ctx);

} // namespace fe
