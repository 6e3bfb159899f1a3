// The target's sampling chain, applied as llama.cpp applies it (penalties -> top-k -> top-p ->
// min-p -> temperature -> dist). Exposed as an explicit distribution because speculative
// acceptance needs the probabilities, not only a sample.
#pragma once

#include "falcon-edge/params.h"

#include "llama.h"

#include <cstdint>
#include <random>
#include <vector>

namespace fe {

struct token_prob {
    llama_token id;
    float       p;
};

// reproducible random numbers for one request
class rng {
public:
    explicit rng(uint64_t seed) : gen_(seed) {}
    double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(gen_); }
private:
    std::mt19937_64 gen_;
};

// index of the largest logit (lowest index on ties)
llama_token argmax(const float * logits, int32_t n_vocab);

// the next token under greedy decoding: argmax after the repeat penalty (if any)
llama_token pick_greedy(const float * logits, int32_t n_vocab, const sampling_params & sp,
                        const std::vector<llama_token> & history);

// the distribution the chain samples from, over the tokens it keeps, sorted by p descending;
// requires sp.temperature > 0. history: every token before the one being predicted.
void dist_from_logits(const float * logits, int32_t n_vocab, const sampling_params & sp,
                      const std::vector<llama_token> & history, std::vector<token_prob> & out);

// draws a token from a distribution (probabilities need not sum exactly to 1)
llama_token sample_dist(const std::vector<token_prob> & dist, rng & r);

} // namespace fe
