// Self-distillation: the target's own greedy answers to many prompts, decoded in parallel
// sequences (continuous batching), with the target's features of every token. This is drafter
// training data that matches what the target will be asked to predict.
#pragma once

#include "llama.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

namespace fe {

struct self_distill_params {
    int32_t max_tokens = 256;  // answer length cap (the final token is included)
    int32_t n_parallel = 16;   // sequences decoded together
    int32_t n_threads  = 0;    // 0 = all cores
};

struct distilled_sequence {
    std::vector<llama_token> tokens;       // prompt then answer [n]
    int32_t                  n_prompt = 0; // tokens[0 .. n_prompt) are the prompt
    std::vector<float>       features;     // post-norm hidden state of every token [n * n_embd]
    bool                     finished = false; // the answer ended with an end-of-generation token
};

// called once per finished sequence with its index in `prompts`, in completion order (not prompt
// order); return false to stop: sequences still being decoded are then dropped
using distilled_callback = std::function<bool(int32_t i_prompt, distilled_sequence && seq)>;

// Decodes greedy answers to every prompt and hands each finished one to `on_done`. A prompt is
// evaluated in a decode of its own (one KV stream per sequence: a batch mixing one long and many
// one-token sequences would be split into many small ubatches); every step then decodes one token of
// every answering sequence together. Each answer token is fed back once more so that its feature
// exists too. Throws std::invalid_argument on empty/out-of-vocabulary prompts or bad params,
// fe::model_error when the batch context cannot be created, fe::aborted when `cancel` becomes true.
void self_distill(llama_model * model, const std::vector<std::vector<llama_token>> & prompts,
                  const self_distill_params & params, const std::atomic<bool> & cancel, const distilled_callback & on_done);

} // namespace fe
