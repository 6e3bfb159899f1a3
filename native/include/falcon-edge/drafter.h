// The Falcon drafter (falcon-sar) on ggml: its hyper-parameters, its weights and the stateful
// runtime that drafts k tokens per block. The math is docs/drafter-format.md, and nothing else:
// loading and validation live in drafter-loader.cpp, graphs, compute and the KV cache in drafter.cpp.
#pragma once

#include "ggml-cpp.h"
#include "llama.h"

#include <cstdint>
#include <string>
#include <vector>

namespace fe {

enum class fusion_kind {
    LSTM,   // Falcon: two LSTM layers 2H -> H -> H, each from a zero state per position
    LINEAR, // EAGLE-1: h = W_fc x + b_fc
};

// everything the drafter GGUF says about itself and the target it was trained for
struct drafter_hparams {
    int32_t     block_size     = 0;   // k: pairs per block, tokens drafted per pass
    int32_t     n_layer        = 0;   // decoder layers after the fusion
    int32_t     n_embd         = 0;   // H, equal to target_n_embd
    int32_t     n_ff           = 0;   // SwiGLU width
    int32_t     n_head         = 0;
    int32_t     n_head_kv      = 0;   // divides n_head (GQA)
    int32_t     head_dim       = 0;
    float       rms_eps        = 0.0f;
    float       rope_freq_base = 0.0f;
    int32_t     rope_mode      = 0;   // ggml rope mode: 0 normal, GGML_ROPE_TYPE_NEOX (2)
    fusion_kind fusion         = fusion_kind::LSTM;
    int32_t     n_vocab_draft  = 0;   // rows of the drafter LM head; target_n_vocab when the vocab is full

    // identity of the target
    std::string target_arch;          // general.architecture of the target, e.g. "qwen2"
    int32_t     target_n_embd  = 0;
    int32_t     target_n_vocab = 0;
    std::string target_vocab_hash;    // "fnv1a64:%016x", see vocab_hash()

    std::vector<int32_t> tree_parents; // [n_nodes], the tree the drafter was tuned with, -1 = root; may be empty
    std::vector<float>   accept_rates; // [N_ACCEPT_KEYS], held-out P(accepted | parent accepted) per key; may be empty
};

struct drafter_params {
    int32_t n_ctx     = 4096; // max committed pairs (KV slots of the context)
    int32_t n_scratch = 256;  // max tree-block positions per drafting phase (KV slots after the context)
    int32_t n_batch   = 512;  // max context positions evaluated by one graph (longer spans are chunked)
    int32_t n_threads = 0;    // CPU threads, 0 = hardware concurrency
    // context window: where more pairs are pending than this (a new prompt), only the last n_window of them
    // (rounded down to whole blocks) and the last block are evaluated, and no later position sees the ones
    // before (0: the whole context). Bounds a new request's catch-up (~0.4 ms a pair for Qwen2.5-1.5B's drafter
    // on 2 cores, more as attention grows). Measured with the shipped drafter on the target's own answers to
    // training-source prompts, top-1 agreement at depths 1 / 2, whole context -> 256-pair window: 0.443 / 0.338
    // -> 0.444 / 0.332 (16 prompts of 55-589 tokens) and 0.292 / 0.197 -> 0.300 / 0.183 (8 of 462-722 tokens),
    // changes within the sampling error (0.01-0.02). The engine has the target compute features for the window
    // only. Smaller windows lose code context: HumanEval τ 1.432 -> 1.400 at 64 (bench/window.py, Q4_K_M)
    int32_t n_window  = 256;
};

// one tree block to expand: k pairs (feature, token) at consecutive positions
struct drafter_block {
    int32_t                  parent = -1; // index of the parent block among this phase's blocks, -1 = the context's last block
    std::vector<float>       feat;        // [k*n_embd]: row j is the parent block's output feature j
    std::vector<llama_token> tok;         // [k]: target token ids d_{(L-1)k+1+j}
};

// one decoder layer
struct drafter_layer {
    // normalization
    ggml_tensor * attn_norm = nullptr; // [n_embd], F32; nullptr in layer 0 (no input norm)
    ggml_tensor * ffn_norm  = nullptr; // [n_embd], F32
    // attention
    ggml_tensor * wq = nullptr;        // [n_embd, n_head*head_dim]
    ggml_tensor * wk = nullptr;        // [n_embd, n_head_kv*head_dim]
    ggml_tensor * wv = nullptr;        // [n_embd, n_head_kv*head_dim]
    ggml_tensor * wo = nullptr;        // [n_head*head_dim, n_embd]
    // mlp
    ggml_tensor * ffn_gate = nullptr;  // [n_embd, n_ff]
    ggml_tensor * ffn_up   = nullptr;  // [n_embd, n_ff]
    ggml_tensor * ffn_down = nullptr;  // [n_ff, n_embd]
};

// the drafter's weights plus the frozen target tensors it borrows, on one backend buffer
struct drafter_weights {
    drafter_hparams hparams;

    // fusion: LSTM layers (fusion LSTM) or one linear layer (fusion LINEAR); unused ones stay nullptr
    ggml_tensor * lstm_w[2] = {nullptr, nullptr}; // [2*n_embd, 4*n_embd], [n_embd, 4*n_embd]; gates i, f, g, o
    ggml_tensor * lstm_b[2] = {nullptr, nullptr}; // [4*n_embd], F32, b_ih + b_hh
    ggml_tensor * fc_w      = nullptr;            // [2*n_embd, n_embd]
    ggml_tensor * fc_b      = nullptr;            // [n_embd], F32

    std::vector<drafter_layer> layers;            // [n_layer]

    // target tensors, in the target's own (possibly quantized) type
    ggml_tensor * tok_embd_tgt = nullptr;         // [n_embd, target_n_vocab]
    ggml_tensor * lm_head      = nullptr;         // [n_embd, n_vocab_draft]: output.weight, the tied token_embd, or the d2t rows
    std::vector<llama_token> d2t;                 // [n_vocab_draft] draft id -> target id; empty when the vocab is full

    ggml_context_ptr        ctx; // tensor metadata
    ggml_backend_buffer_ptr buf; // tensor data
};

// Loads the drafter GGUF at path_dft and the target's token_embd / output from the target GGUF at
// path_tgt into a buffer of type buft, after checking everything that could make the drafter unusable:
//   - the files: readable GGUF, every tensor inside the file (a truncated file)  -> fe::model_error
//   - general.architecture == "falcon-sar", every hyper-parameter present, typed and in range, the
//     fusion string known, every tensor present with its shape and an allowed type, d2t ids in range
//                                                                                   -> fe::incompatible_drafter
//   - the target identity (architecture, n_embd, n_vocab, vocab hash) against model_tgt, or against
//     the target GGUF's own metadata when model_tgt is null, and the target tensors' shapes
//                                                                                   -> fe::incompatible_drafter
// Sizes are checked before anything is allocated; nothing is read past the end of a file.
void drafter_load(drafter_weights & w, const std::string & path_dft, const std::string & path_tgt,
                  const llama_model * model_tgt, ggml_backend_buffer_type_t buft);

// The stateful drafter of one generation. Pair i = (f_i, t_{i+1}) sits at position i and KV slot i;
// tree blocks of the current drafting phase sit in the scratch slots right after the context.
// A drafting phase is: push_pairs (the newly committed pairs), eval_context, then eval_blocks once
// per tree level. Not thread-safe.
class drafter {
public:
    // model_tgt may be null (tests): the identity is then read from the target GGUF.
    // throws fe::model_error, fe::incompatible_drafter (see drafter_load), std::invalid_argument for params
    drafter(const std::string & path_dft, const std::string & path_tgt, const llama_model * model_tgt,
            const drafter_params & params);
    ~drafter();

    drafter(const drafter &)             = delete;
    drafter & operator=(const drafter &) = delete;

    const drafter_hparams & hparams() const { return w.hparams; }

    // appends committed pairs at positions n_pairs() .. n_pairs()+n-1; feat [n, n_embd] as n rows of n_embd,
    // tok [n] target ids. throws fe::context_full past n_ctx, std::invalid_argument for a bad token id.
    void push_pairs(const float * feat, const llama_token * tok, int32_t n);
    // appends committed pairs whose features were never computed (tok [n] target ids): no later catch-up
    // or eval_context reads them, the window starting after them. throws as push_pairs.
    void push_unread(const llama_token * tok, int32_t n);

    // forgets the pairs at positions >= n_pairs (and their KV); ends the drafting phase
    void truncate(int32_t n_pairs);

    int32_t n_pairs() const { return (int32_t) tok_ctx.size(); }
    // the committed pairs the next catch_up and eval_context would evaluate (the window counted) once
    // n_more more pairs are pushed
    int32_t backlog(int32_t n_more) const;

    // Brings the KV up to date with all committed pairs: the span [p0, n) with p0 = min(n_cached, n-k)
    // is evaluated with its k-blocks aligned to n (docs/drafter-format.md), so the last k pairs always
    // form one complete block. Starts a new phase (forgets its tree blocks).
    // Returns the last m = min(k, n) outputs: out_feat [m, n_embd] and out_logits [m, n_vocab_draft];
    // row j predicts t_{n+1+j}. throws std::invalid_argument when there is no pair.
    void eval_context(std::vector<float> & out_feat, std::vector<float> & out_logits);

    // Evaluates the committed pairs eval_context would, but for the last k, without outputs, where more
    // than n_pending of them are pending: a later eval_context then costs at most n_pending pairs beyond
    // its block, whatever the backlog (a prompt, a stretch without drafting), and a backlog of one cycle
    // (n_pending = the cycle's node budget) stays one graph. Ends the drafting phase. The KV it leaves
    // equals what eval_context computes for those pairs.
    void catch_up(int32_t n_pending);

    // Evaluates tree blocks in one graph. Block b of this call gets phase index n_blocks_before + b; it sees
    // the context, the blocks on its parent chain (any earlier index of this phase) and its own k pairs.
    // Positions are n + (L-1)k + j at level L (1 + the number of ancestor blocks).
    // Returns out_feat [n_blocks*k, n_embd] and out_logits [n_blocks*k, n_vocab_draft], blocks in order.
    // throws std::invalid_argument (no eval_context since the last change, bad parent, sizes or token ids),
    // fe::context_full past n_scratch.
    void eval_blocks(const std::vector<drafter_block> & blocks, std::vector<float> & out_feat, std::vector<float> & out_logits);

    // the target id of draft-vocabulary id id_draft (identity when the draft vocab is full)
    llama_token draft_to_target(int32_t id_draft) const;

    // cumulated graph compute time, for statistics
    double t_eval_us() const { return t_eval_us_acc; }

private:
    // one graph: n_tokens query rows over n_kv visible slots; the last n_out rows produce outputs
    // (n_out 0: the graph only fills the KV cache)
    struct graph_input {
        std::vector<llama_token> tok;          // [n_tokens]
        const float *            feat = nullptr; // [n_tokens, n_embd]
        std::vector<int32_t>     pos;          // [n_tokens]
        std::vector<int64_t>     slot;         // [n_tokens] KV slots written
        std::vector<float>       mask;         // [n_tokens, n_kv - kv0]: 0 visible, -INF hidden
        int32_t                  kv0   = 0;    // first slot the rows can see (slots before it are outside the window)
        int32_t                  n_kv  = 0;
        int32_t                  n_out = 0;
    };

    void init_backends();
    void init_kv();
    void compute(const graph_input & in, std::vector<float> & out_feat, std::vector<float> & out_logits);
    void eval_span(int32_t c0, int32_t c1, std::vector<float> & out_feat, std::vector<float> & out_logits);
    // evaluates the pairs [c0, end), end a block end (n_pairs() - end a multiple of k), in graphs of at
    // most n_batch pairs cut at block ends; the outputs are those of the last graph
    void eval_range(int32_t c0, int32_t end, std::vector<float> & out_feat, std::vector<float> & out_logits);
    void check_tokens(const llama_token * tok, size_t n) const;
    // appends n pairs after checking room and token ids; feat null: rows of zeros (push_unread)
    void append_pairs(const float * feat, const llama_token * tok, int32_t n);
    // the first pair a catch-up to `end` (a block end) evaluates: n_cached, or where more than n_window pairs
    // are pending, end - the window in whole blocks; never a pair before n_read (up to end)
    int32_t window_start(int32_t end) const;
    // leaves the pairs before window_start(end) out of the context: n_skip = n_cached = window_start(end)
    void skip_backlog(int32_t end);

    drafter_params  params;
    drafter_weights w;

    ggml_backend_ptr       backend_gpu; // nullptr without a GPU device
    ggml_backend_ptr       backend_cpu;
    ggml_backend_sched_ptr sched;
    std::vector<uint8_t>   buf_meta;    // graph metadata, rebuilt per call

    // KV cache: slots [0, n_ctx) for the context, [n_pairs, n_pairs + n_scratch) for tree blocks
    ggml_context_ptr            ctx_kv;
    ggml_backend_buffer_ptr     buf_kv;
    std::vector<ggml_tensor *>  k_cache; // [n_layer] of [n_head_kv*head_dim, n_ctx + n_scratch], F32
    std::vector<ggml_tensor *>  v_cache; // [n_layer] of [n_head_kv*head_dim, n_ctx + n_scratch], F32

    // committed pairs, on the host
    std::vector<float>       feat_ctx; // [n_pairs, n_embd]
    std::vector<llama_token> tok_ctx;  // [n_pairs]
    int32_t                  n_cached = 0; // context slots [n_skip, n_cached) hold valid KV
    int32_t                  n_skip   = 0; // context slots [0, n_skip) are outside the window: never seen
    int32_t                  n_read   = 0; // pairs [0, n_read) may lack features (push_unread): never evaluated

    // tree blocks of the current phase
    bool                 phase_open = false; // eval_context ran since the last push_pairs / truncate
    std::vector<int32_t> block_parent;       // [n_blocks]
    std::vector<int32_t> block_level;        // [n_blocks], 1 = child of the context's last block

    double t_eval_us_acc = 0.0;
};

// identity of a vocabulary: 64-bit FNV-1a over each token text followed by a NUL byte
// (gguf_schema.py vocab_hash() writes the same value as "fnv1a64:%016x")
uint64_t vocab_hash(const llama_vocab * vocab);

} // namespace fe
