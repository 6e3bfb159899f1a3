// Keeps the accepted path of the last verified tree in the target's KV cache.
#pragma once

#include "llama.h"

namespace fe {

// After a tree verified at n_past, keeps the root and the n_accepted accepted nodes (positions
// n_past .. n_past + n_accepted) that lie on leaf sequence seq_leaf, removes every other node's
// cells and every other sequence, and leaves the result in seq 0. Positions after the path are
// free afterwards.
void kv_commit(llama_context * ctx, llama_seq_id seq_leaf, llama_pos n_past, int32_t n_accepted);

} // namespace fe
