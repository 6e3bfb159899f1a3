// The target's LM head outside llama_decode: the "path head" of tree verification on a CPU.
//
// Verifying a tree of N nodes asks the target for N rows of logits, but the acceptance walk reads
// only the rows of the nodes it reaches: the root and each accepted node, 1 + accepted rows. On a CPU
// the LM head is a large share of a decode (151936 x 1536 weights for Qwen2.5-1.5B, ~21% of a Q4_K_M
// token step on 2 AVX2 cores), so the engine decodes a tree up to the final norm only (the features
// of every node, llama-cpp-notes.md §2.3) and asks this class for the logits of the rows the walk
// needs. The weights are the target GGUF's own output.weight (or the tied token_embd.weight), mapped
// read-only: the pages are those of llama.cpp's own mapping of the same file, so no copy is made, and
// the matrix product is ggml's, on the CPU backend, with the tensor's own type, as in the decode.
// Whether that reproduces the target's logits bit for bit is checked by the engine before use
// (engine.cpp: a model whose graph scales or caps its logits after the product keeps the head in
// the decode).
#pragma once

#include "ggml-cpp.h"

#include <cstdint>
#include <string>
#include <vector>

namespace fe {

class target_head {
public:
    // maps the LM head of the target GGUF at path_model; throws fe::model_error when the file has no
    // head tensor of shape [n_embd, n_vocab], cannot be mapped, or the platform has no mmap
    target_head(const std::string & path_model, int32_t n_embd, int32_t n_vocab, int32_t n_threads);
    ~target_head();
    target_head(const target_head &) = delete;
    target_head & operator=(const target_head &) = delete;

    // logits of m feature rows: feat [m, n_embd] (post-norm hidden states) -> out [m, n_vocab]
    void logits(const float * feat, int32_t m, float * out);

    int32_t n_vocab() const { return n_vocab_; }

private:
    // the whole file, read-only; declared first, so it is unmapped after everything that points into it
    struct file_map {
        void * data = nullptr;
        size_t size = 0;
        file_map() = default;
        file_map(const file_map &) = delete;
        file_map & operator=(const file_map &) = delete;
        ~file_map();
    };
    file_map map_;
    int32_t  n_embd_  = 0;
    int32_t  n_vocab_ = 0;

    ggml_context_ptr        ctx_w_;   // the weight tensor's metadata
    ggml_tensor *           w_ = nullptr; // [n_embd, n_vocab], the file's type, data in the mapping
    ggml_backend_buffer_ptr buf_w_;   // a CPU buffer over the mapped tensor data
    ggml_backend_ptr        backend_; // CPU
    ggml_gallocr_ptr        galloc_;  // inputs and outputs of the per-call graph
    std::vector<uint8_t>    buf_meta_;
};

} // namespace fe
