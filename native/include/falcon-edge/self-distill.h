// Self-distillation: the target's own greedy answers to many prompts, decoded in parallel
// sequences of one batch (continuous batching), with the target's features of every token.
// This is drafter training data that matches what the target will be asked to predict.
#pragma once

#include "llama.h"

#include <atomic>
#include <cstdint>
#include <vector>

namespace fe {

struct self_distill_params {
    int32_t max_tokens = 256;  // answer length cap (the final token is included)
    int32_t n_parallel = 16;   // sequences decoded together
    int32_t n_threads  = 0;    // 0 = all cores
};

struct distilled_sequence {
    std::vector<llama_token> tokens;   // prompt then answer [n]
    int32_t                  n_prompt; // tokens[0 .. n_prompt) are the prompt
    std::vector<float>       features; // post-norm hidden state of every token [n * n_embd]
    bool                     finished; // the answer ended with an end-of-generation token
};

// Decodes greedy answers to every prompt; each answer token is fed back once more so that its
// feature exists too. Throws std::invalid_argument on empty/out-of-vocabulary prompts or bad params,
// fe::model_error when the batch context cannot be created, fe::aborted when `cancel` becomes true.
std::vector<distilled_sequence> self_distill(llama_model * model, const std::vector<std::vector<llama_token>> & prompts,
                                             const self_distill_params & params, const std::atomic<bool> & cancel);

} // namespace fe
