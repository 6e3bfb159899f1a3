// KV cleanup after verification (llama-cpp-notes.md §1.6).
#include "falcon-edge/kv-commit.h"
#include "falcon-edge/errors.h"

namespace fe {

void kv_commit(llama_context * ctx, llama_seq_id seq_leaf, llama_pos n_past, int32_t n_accepted) {
    llama_memory_t mem = llama_get_memory(ctx);
    // drop the deeper, rejected nodes on the kept path first, then everything not on it
    if (!llama_memory_seq_rm(mem, seq_leaf, n_past + 1 + n_accepted, -1)) {
        throw error(format("the KV cache cannot drop positions %d.. of sequence %d", n_past + 1 + n_accepted, seq_leaf));
    }
    llama_memory_seq_keep(mem, seq_leaf);
    if (seq_leaf != 0) {
        llama_memory_seq_cp(mem, seq_leaf, 0, -1, -1);
        llama_memory_seq_keep(mem, 0);
    }
}

} // namespace fe
