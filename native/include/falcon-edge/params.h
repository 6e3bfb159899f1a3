// Parameter structs that cross from Python once per request. Each mirrors a dataclass of
// falcon_edge/config.py field for field (same names; tests/unit/test_config.py checks it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fe {

// how the target distribution is shaped before sampling, applied in llama.cpp's order:
// repeat penalty -> top-k -> top-p -> min-p -> temperature -> sample. temperature <= 0 is greedy.
struct sampling_params {
    float    temperature    = 0.0f;
    int32_t  top_k          = 40;    // <= 0: all tokens
    float    top_p          = 0.95f; // >= 1: off
    float    min_p          = 0.05f; // <= 0: off
    float    repeat_penalty = 1.0f;  // 1: off
    int32_t  repeat_last_n  = 64;    // tokens looked back by the repeat penalty
    uint64_t seed           = 0;
};

// speculation: which proposer runs and how large its tree may be
struct spec_params {
    std::string mode = "plain";  // "plain" | "ngram" | "falcon"
    int32_t n_nodes_max = 0;     // tree budget incl. the root; 0 = chosen from the measured verify-cost curve
    int32_t depth_max   = 8;     // deepest drafted token
    // n-gram proposer (mode "ngram", and merged into the drafter's tree in mode "falcon")
    int32_t ngram_min      = 1;  // shortest suffix matched in the context
    int32_t ngram_max      = 12; // longest suffix matched in the context
    int32_t ngram_branches = 3;  // distinct continuations offered as branches; 0 in mode "falcon": drafter only
    // falcon proposer
    int32_t top_k_draft = 4;     // candidates kept per drafted position
    int32_t n_passes    = 2;     // drafter passes per drafting phase (1 context pass + expansions)
    // a fixed tree shape instead of the dynamic tree (empty: dynamic): preset node i is the
    // candidate of rank preset_rank[i] below preset node preset_parent[i] (-1: below the root);
    // parents come before their children
    std::vector<int32_t> preset_parent;
    std::vector<int32_t> preset_rank;
};

struct generate_params {
    int32_t max_tokens = 256;              // generated tokens at most
    std::vector<std::string> stop;         // stop strings (not included in the output)
    bool ignore_eos = false;
    sampling_params sampling;
    spec_params spec;
};

struct engine_params {
    int32_t n_ctx        = 4096;
    int32_t n_batch      = 256;   // prefill chunk; a verification tree must fit in one
    int32_t n_threads    = 0;     // 0 = all cores
    int32_t n_gpu_layers = 0;
    int32_t n_seq_max    = 64;    // leaves a tree may have (<= 256)
    bool    flash_attn   = false; // off: tree and sequential decoding agree bit for bit
    // on a CPU, trees are decoded up to the final norm and the LM head runs only for the rows the
    // acceptance walk reads (target-head.h); off: every node's logits come from the decode
    bool    path_head    = true;
    bool    verbose      = false;
};

} // namespace fe
