// Per-generation counters and timers (fe::gen_stats), reported to Python after each request.
#pragma once

#include <cstdint>

namespace fe {

struct gen_stats {
    int32_t n_prompt    = 0; // prompt tokens of the request
    int32_t n_prefill   = 0; // prompt tokens actually evaluated (the rest came from the KV cache)
    int32_t n_generated = 0; // tokens emitted
    int32_t n_cycles    = 0; // target forward passes after the prefill (one per emitted chunk)
    int32_t n_drafted   = 0; // draft tokens offered for verification (tree nodes below the roots)
    int32_t n_accepted  = 0; // draft tokens accepted
    int32_t n_drafted_ngram  = 0; // of n_drafted: offered by n-gram lookup (ORIGIN_NGRAM)
    int32_t n_accepted_ngram = 0; // of n_accepted: offered by n-gram lookup
    int32_t n_draft_passes = 0; // drafter forward passes
    bool    drafter_joined = false; // the drafter took part: the target gave it its features from the prefill on
    int32_t n_prompt_features = 0;  // prompt tokens decoded with features on (each an output): the window's chunks
    double  t_prefill_us = 0;
    double  t_draft_us   = 0;
    double  t_verify_us  = 0; // target decode of the trees (or single tokens)
    double  t_sample_us  = 0; // acceptance walk, sampling and KV commit (path-head calls included)
    int32_t n_head_rows  = 0; // logits rows the path head computed (target-head.h)
    double  t_head_us    = 0; // time of those path-head calls
    double  t_total_us   = 0;
    int32_t n_nodes_max  = 0; // tree budget used (1 = plain decoding)
    // what the verifications cost by the device's verify-cost curve, in plain steps: the sum over cycles
    // of c(nodes verified) as estimated when the tree was sized (n_cycles for plain decoding), plus
    // the path head's calls by its estimated cost
    double  verify_units = 0;
};

} // namespace fe
