// The falcon-sar GGUF format: key and tensor-name strings, spelled exactly as in
// falcon_edge/gguf_schema.py (tests/unit/test_gguf_schema.py checks both lists agree).
// The math these tensors implement is written down in docs/drafter-format.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fe::gguf_schema {

inline constexpr const char * ARCH = "falcon-sar";

// hyper-parameters
inline constexpr const char * KEY_BLOCK_SIZE          = "falcon-sar.block_size";            // u32, k
inline constexpr const char * KEY_BLOCK_COUNT         = "falcon-sar.block_count";           // u32, decoder layers
inline constexpr const char * KEY_EMBEDDING_LENGTH    = "falcon-sar.embedding_length";      // u32, H
inline constexpr const char * KEY_FEED_FORWARD_LENGTH = "falcon-sar.feed_forward_length";   // u32
inline constexpr const char * KEY_HEAD_COUNT          = "falcon-sar.attention.head_count";  // u32
inline constexpr const char * KEY_HEAD_COUNT_KV       = "falcon-sar.attention.head_count_kv";
inline constexpr const char * KEY_KEY_LENGTH          = "falcon-sar.attention.key_length";  // u32, head dim
inline constexpr const char * KEY_RMS_EPS             = "falcon-sar.attention.layer_norm_rms_epsilon"; // f32
inline constexpr const char * KEY_ROPE_FREQ_BASE      = "falcon-sar.rope.freq_base";        // f32
inline constexpr const char * KEY_ROPE_MODE           = "falcon-sar.rope.mode";             // u32, 0 normal, 2 neox
inline constexpr const char * KEY_FUSION              = "falcon-sar.fusion";                // string
inline constexpr const char * KEY_DRAFT_VOCAB_SIZE    = "falcon-sar.draft_vocab_size";      // u32, 0 = full

// identity of the target
inline constexpr const char * KEY_TARGET_ARCH       = "falcon-sar.target.architecture";
inline constexpr const char * KEY_TARGET_N_EMBD     = "falcon-sar.target.n_embd";
inline constexpr const char * KEY_TARGET_N_VOCAB    = "falcon-sar.target.n_vocab";
inline constexpr const char * KEY_TARGET_VOCAB_HASH = "falcon-sar.target.vocab_hash";

inline constexpr const char * KEY_TREE_PARENTS = "falcon-sar.tree.parents"; // i32 array, optional

// optional: the drafter's calibration measured on held-out data. A drafted node's acceptance key is its drafter
// probability bin x its depth (1, or 2 and deeper); see accept_key()
inline constexpr float ACCEPT_PROB_EDGES[] = {0.1f, 0.2f, 0.35f, 0.5f, 0.7f}; // upper edges of every bin but the last
inline constexpr int   ACCEPT_PROB_BINS    = (int) (sizeof(ACCEPT_PROB_EDGES) / sizeof(ACCEPT_PROB_EDGES[0])) + 1;
inline constexpr int   ACCEPT_DEPTH_KEYS   = 2;
inline constexpr int   N_ACCEPT_KEYS       = ACCEPT_DEPTH_KEYS * ACCEPT_PROB_BINS;
inline constexpr const char * KEY_ACCEPT_RATES = "falcon-sar.acceptance.rates"; // f32 [N_ACCEPT_KEYS], depth-major

// the acceptance key of a drafted node of drafter probability `prob` at `depth` >= 1 below the root
inline int accept_key(float prob, int depth) {
    int bin = 0;
    while (bin < ACCEPT_PROB_BINS - 1 && prob >= ACCEPT_PROB_EDGES[bin]) {
        ++bin;
    }
    return ((depth < ACCEPT_DEPTH_KEYS ? depth : ACCEPT_DEPTH_KEYS) - 1) * ACCEPT_PROB_BINS + bin;
}

inline constexpr const char * FUSION_LSTM   = "lstm";
inline constexpr const char * FUSION_LINEAR = "linear";
inline constexpr int          LSTM_LAYERS   = 2;

// tensors ({layer} is replaced by the layer index)
inline constexpr const char * TENSOR_LSTM_WEIGHT = "fuse.lstm.{layer}.weight";   // [in_l, 4H] in ggml order
inline constexpr const char * TENSOR_LSTM_BIAS   = "fuse.lstm.{layer}.bias";     // [4H]
inline constexpr const char * TENSOR_FC_WEIGHT   = "fuse.fc.weight";             // [2H, H]
inline constexpr const char * TENSOR_FC_BIAS     = "fuse.fc.bias";               // [H]
inline constexpr const char * TENSOR_ATTN_NORM   = "blk.{layer}.attn_norm.weight";
inline constexpr const char * TENSOR_ATTN_Q      = "blk.{layer}.attn_q.weight";
inline constexpr const char * TENSOR_ATTN_K      = "blk.{layer}.attn_k.weight";
inline constexpr const char * TENSOR_ATTN_V      = "blk.{layer}.attn_v.weight";
inline constexpr const char * TENSOR_ATTN_OUT    = "blk.{layer}.attn_output.weight";
inline constexpr const char * TENSOR_FFN_NORM    = "blk.{layer}.ffn_norm.weight";
inline constexpr const char * TENSOR_FFN_GATE    = "blk.{layer}.ffn_gate.weight";
inline constexpr const char * TENSOR_FFN_UP      = "blk.{layer}.ffn_up.weight";
inline constexpr const char * TENSOR_FFN_DOWN    = "blk.{layer}.ffn_down.weight";
inline constexpr const char * TENSOR_D2T         = "d2t";                        // i32 [draft_vocab_size]

inline constexpr const char * TARGET_TENSOR_TOKEN_EMBD = "token_embd.weight";
inline constexpr const char * TARGET_TENSOR_OUTPUT     = "output.weight";

// "blk.{layer}.attn_q.weight", 3 -> "blk.3.attn_q.weight"
std::string tensor_name(const char * templ, int layer);

// every string above by its constant name (for the schema test)
std::map<std::string, std::string> all();

} // namespace fe::gguf_schema
