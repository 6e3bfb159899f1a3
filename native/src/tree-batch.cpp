// Tree -> llama_batch rows (multi-seq tokens) and the prefix copies they need.
#include "falcon-edge/tree-batch.h"

#include "falcon-edge/errors.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace fe {

tree_batch::~tree_batch() {
    if (batch.token != nullptr) {
        llama_batch_free(batch);
    }
}

void tree_batch_build(tree_batch & out, const tree & t, llama_pos n_past, llama_context * ctx) {
    const std::vector<int32_t> leaves = tree_leaves(t);
    const int32_t n_leaves = (int32_t) leaves.size();
    if (n_leaves > (int32_t) llama_n_seq_max(ctx)) {
        throw std::invalid_argument(format("tree has %d leaves but the context allows %u sequences", n_leaves, llama_n_seq_max(ctx)));
    }

    // seq ids of each node: the leaves in its subtree; leaves are numbered in DFS order, so a
    // subtree's leaves form a contiguous range [first, last]
    const int32_t n = t.size();
    std::vector<int32_t> first(n, INT32_MAX), last(n, -1);
    for (int32_t j = 0; j < n_leaves; ++j) {
        for (int32_t u = leaves[j]; u >= 0; u = t.parent[u]) {
            first[u] = std::min(first[u], j);
            last[u]  = std::max(last[u], j);
        }
    }

    llama_memory_t mem = llama_get_memory(ctx);
    for (llama_seq_id s = 1; s < n_leaves; ++s) {
        llama_memory_seq_rm(mem, s, -1, -1);
        llama_memory_seq_cp(mem, 0, s, -1, -1);
    }

    if (out.batch.token != nullptr) {
        llama_batch_free(out.batch);
    }
    out.batch = llama_batch_init(n, 0, n_leaves);
    out.row_of.assign(n, -1);
    out.leaf_seq.assign(n, -1);

    const std::vector<int32_t> order = tree_dfs_order(t);
    for (int32_t r = 0; r < n; ++r) {
        const int32_t u = order[r];
        out.row_of[u]   = r;
        out.leaf_seq[u] = first[u];
        out.batch.token[r]    = t.token[u];
        out.batch.pos[r]      = n_past + t.depth[u];
        out.batch.n_seq_id[r] = last[u] - first[u] + 1;
        for (int32_t s = first[u]; s <= last[u]; ++s) {
            out.batch.seq_id[r][s - first[u]] = s;
        }
        out.batch.logits[r] = 1;
    }
    out.batch.n_tokens = n;
}

} // namespace fe
