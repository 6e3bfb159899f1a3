// A llama_batch that frees itself.
#pragma once

#include "llama.h"

#include <cstdint>

namespace fe {

struct batch_owner {
    llama_batch b;
    explicit batch_owner(int32_t n_tokens, int32_t n_seq = 1) : b(llama_batch_init(n_tokens, 0, n_seq)) {}
    batch_owner(const batch_owner &) = delete;
    batch_owner & operator=(const batch_owner &) = delete;
    ~batch_owner() { llama_batch_free(b); }
};

} // namespace fe
