// The drafter's forward pass on ggml: graph building (fusion, decoder layers, LM head), compute
// through a backend scheduler, the drafter KV cache and the bookkeeping of a drafting phase.
#include "falcon-edge/drafter.h"
#include "falcon-edge/cpu-backend.h"
#include "falcon-edge/errors.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <stdexcept>

namespace fe {

namespace {

// graph tensors written before compute or read after it
struct graph_tensors {
    ggml_tensor * tok        = nullptr; // [n_tokens], I32
    ggml_tensor * feat       = nullptr; // [n_embd, n_tokens]
    ggml_tensor * pos        = nullptr; // [n_tokens], I32
    ggml_tensor * slot       = nullptr; // [n_tokens], I64
    ggml_tensor * mask       = nullptr; // [n_kv, n_tokens]
    ggml_tensor * out_feat   = nullptr; // [n_embd, n_out]
    ggml_tensor * out_logits = nullptr; // [n_vocab_draft, n_out]
};

size_t graph_max_nodes(const drafter_hparams & hp) {
    return 128 + 64 * (size_t) hp.n_layer;
}

ggml_tensor * build_fuse(ggml_context * ctx, const drafter_weights & w, ggml_tensor * x) {
    if (w.hparams.fusion == fusion_kind::LINEAR) {
        return ggml_add(ctx, ggml_mul_mat(ctx, w.fc_w, x), w.fc_b); // [n_embd, n_tokens]
    }
    // a zero state removes W_hh and the forget gate: c = σ(i)·tanh(g), h = σ(o)·tanh(c)
    const int64_t n_embd = w.hparams.n_embd;
    ggml_tensor * h = x;
    for (int l = 0; l < 2; ++l) {
        ggml_tensor * gates = ggml_add(ctx, ggml_mul_mat(ctx, w.lstm_w[l], h), w.lstm_b[l]); // [4*n_embd, n_tokens]
        auto gate = [&](int i) { // [n_embd, n_tokens], gate order i, f, g, o
            return ggml_view_2d(ctx, gates, n_embd, gates->ne[1], gates->nb[1], i * n_embd * gates->nb[0]);
        };
        ggml_tensor * c = ggml_mul(ctx, ggml_sigmoid(ctx, gate(0)), ggml_tanh(ctx, gate(2))); // [n_embd, n_tokens]
        h = ggml_mul(ctx, ggml_sigmoid(ctx, gate(3)), ggml_tanh(ctx, c));                     // [n_embd, n_tokens]
    }
    return h;
}

ggml_tensor * rope(ggml_context * ctx, ggml_tensor * x, ggml_tensor * pos, const drafter_hparams & hp) {
    // no YaRN (ext_factor 0): plain RoPE with the target's base, n_ctx_orig and betas are then unused
    return ggml_rope_ext(ctx, x, pos, nullptr, hp.head_dim, hp.rope_mode, 0, hp.rope_freq_base, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f);
}

ggml_tensor * build_attn(ggml_context * ctx, const drafter_weights & w, const drafter_layer & layer, ggml_tensor * a,
                         const graph_tensors & gt, ggml_tensor * k_cache, ggml_tensor * v_cache, int32_t kv0, int32_t n_kv) {
    const drafter_hparams & hp = w.hparams;
    const int64_t n_tokens = a->ne[1];
    const int64_t n_embd_kv = (int64_t) hp.n_head_kv * hp.head_dim;

    ggml_tensor * q = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, layer.wq, a), hp.head_dim, hp.n_head, n_tokens);    // [head_dim, n_head, n_tokens]
    ggml_tensor * k = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, layer.wk, a), hp.head_dim, hp.n_head_kv, n_tokens); // [head_dim, n_head_kv, n_tokens]
    ggml_tensor * v = ggml_mul_mat(ctx, layer.wv, a);                                                           // [n_embd_kv, n_tokens]
    q = rope(ctx, q, gt.pos, hp);
    k = rope(ctx, k, gt.pos, hp);

    // reading through the set_rows results makes every read depend on this graph's writes
    ggml_tensor * k_all = ggml_set_rows(ctx, k_cache, ggml_reshape_2d(ctx, k, n_embd_kv, n_tokens), gt.slot); // [n_embd_kv, n_slots]
    ggml_tensor * v_all = ggml_set_rows(ctx, v_cache, v, gt.slot);                                             // [n_embd_kv, n_slots]
    const size_t nb_head = ggml_row_size(k_all->type, hp.head_dim);
    // the visible slots [kv0, n_kv): n_vis = n_kv - kv0
    const int32_t n_vis = n_kv - kv0;
    ggml_tensor * k_view = ggml_view_3d(ctx, k_all, hp.head_dim, hp.n_head_kv, n_vis, nb_head, k_all->nb[1], kv0 * k_all->nb[1]); // [head_dim, n_head_kv, n_vis]
    ggml_tensor * v_view = ggml_view_3d(ctx, v_all, hp.head_dim, hp.n_head_kv, n_vis, nb_head, v_all->nb[1], kv0 * v_all->nb[1]); // [head_dim, n_head_kv, n_vis]

    // GQA: mul_mat broadcasts kv head h / (n_head / n_head_kv) over the query heads
    ggml_tensor * kq = ggml_mul_mat(ctx, ggml_permute(ctx, k_view, 0, 2, 1, 3), ggml_permute(ctx, q, 0, 2, 1, 3)); // [n_vis, n_tokens, n_head]
    ggml_prec_set_acc(kq, GGML_PREC_F32);
    kq = ggml_soft_max_ext(ctx, kq, gt.mask, 1.0f / std::sqrt((float) hp.head_dim), 0.0f);                    // [n_vis, n_tokens, n_head]
    ggml_tensor * v_t = ggml_cont(ctx, ggml_permute(ctx, v_view, 1, 2, 0, 3));                                // [n_vis, head_dim, n_head_kv]
    ggml_tensor * o   = ggml_mul_mat(ctx, v_t, kq);                                                          // [head_dim, n_tokens, n_head]
    o = ggml_cont_2d(ctx, ggml_permute(ctx, o, 0, 2, 1, 3), (int64_t) hp.head_dim * hp.n_head, n_tokens);     // [n_head*head_dim, n_tokens]
    return ggml_mul_mat(ctx, layer.wo, o);                                                                   // [n_embd, n_tokens]
}

ggml_tensor * build_layer(ggml_context * ctx, const drafter_weights & w, int il, ggml_tensor * h, const graph_tensors & gt,
                          ggml_tensor * k_cache, ggml_tensor * v_cache, int32_t kv0, int32_t n_kv) {
    const drafter_layer & layer = w.layers[il];
    const float eps = w.hparams.rms_eps;
    ggml_tensor * a = layer.attn_norm ? ggml_mul(ctx, ggml_rms_norm(ctx, h, eps), layer.attn_norm) : h; // [n_embd, n_tokens]
    h = ggml_add(ctx, h, build_attn(ctx, w, layer, a, gt, k_cache, v_cache, kv0, n_kv));                     // [n_embd, n_tokens]
    ggml_tensor * m  = ggml_mul(ctx, ggml_rms_norm(ctx, h, eps), layer.ffn_norm);                      // [n_embd, n_tokens]
    ggml_tensor * ff = ggml_swiglu_split(ctx, ggml_mul_mat(ctx, layer.ffn_gate, m), ggml_mul_mat(ctx, layer.ffn_up, m)); // [n_ff, n_tokens]
    return ggml_add(ctx, h, ggml_mul_mat(ctx, layer.ffn_down, ff));                                     // [n_embd, n_tokens]
}

ggml_tensor * new_input(ggml_context * ctx, enum ggml_type type, int64_t ne0, int64_t ne1) {
    ggml_tensor * t = ggml_new_tensor_2d(ctx, type, ne0, ne1);
    ggml_set_input(t);
    return t;
}

ggml_cgraph * build_graph(ggml_context * ctx, const drafter_weights & w, const std::vector<ggml_tensor *> & k_cache,
                          const std::vector<ggml_tensor *> & v_cache, int32_t n_tokens, int32_t kv0, int32_t n_kv,
                          int32_t n_out, graph_tensors & gt) {
    const int64_t n_embd = w.hparams.n_embd;
    gt.tok  = new_input(ctx, GGML_TYPE_I32, n_tokens, 1);
    gt.feat = new_input(ctx, GGML_TYPE_F32, n_embd, n_tokens);
    gt.pos  = new_input(ctx, GGML_TYPE_I32, n_tokens, 1);
    gt.slot = new_input(ctx, GGML_TYPE_I64, n_tokens, 1);
    gt.mask = new_input(ctx, GGML_TYPE_F32, n_kv - kv0, n_tokens);

    ggml_tensor * e = ggml_get_rows(ctx, w.tok_embd_tgt, gt.tok);         // [n_embd, n_tokens]
    ggml_tensor * h = build_fuse(ctx, w, ggml_concat(ctx, e, gt.feat, 0)); // [n_embd, n_tokens]
    for (int il = 0; il < w.hparams.n_layer; ++il) {
        h = build_layer(ctx, w, il, h, gt, k_cache[il], v_cache[il], kv0, n_kv);
    }
    ggml_cgraph * graph = ggml_new_graph_custom(ctx, graph_max_nodes(w.hparams), false);
    if (n_out == 0) { // a chunk before the last one only fills the KV cache
        ggml_build_forward_expand(graph, h);
        return graph;
    }
    ggml_tensor * h_out = ggml_view_2d(ctx, h, n_embd, n_out, h->nb[1], (size_t) (n_tokens - n_out) * h->nb[1]); // [n_embd, n_out]
    gt.out_feat   = ggml_cont(ctx, h_out);                    // [n_embd, n_out]
    gt.out_logits = ggml_mul_mat(ctx, w.lm_head, gt.out_feat); // [n_vocab_draft, n_out]
    ggml_set_output(gt.out_feat);
    ggml_set_output(gt.out_logits);
    ggml_build_forward_expand(graph, gt.out_feat);
    ggml_build_forward_expand(graph, gt.out_logits);
    return graph;
}

} // namespace

// ---- construction ----------------------------------------------------------------------------

drafter::drafter(const std::string & path_dft, const std::string & path_tgt, const llama_model * model_tgt,
                 const drafter_params & params) : params(params) {
    if (params.n_ctx < 1 || params.n_ctx > (1 << 20) || params.n_scratch < 1 || params.n_scratch > (1 << 16) ||
        params.n_batch < 1 || params.n_batch > (1 << 16) || params.n_threads < 0 || params.n_window < 0) {
        throw std::invalid_argument(format("drafter params out of range: n_ctx %d, n_scratch %d, n_batch %d, n_threads %d, n_window %d",
                                           params.n_ctx, params.n_scratch, params.n_batch, params.n_threads, params.n_window));
    }
    init_backends();
    ggml_backend_t backend_main = backend_gpu ? backend_gpu.get() : backend_cpu.get();
    drafter_load(w, path_dft, path_tgt, model_tgt, ggml_backend_get_default_buffer_type(backend_main));
    if (params.n_scratch < w.hparams.block_size) {
        throw std::invalid_argument(format("n_scratch %d is smaller than the drafter's block size %d", params.n_scratch,
                                           w.hparams.block_size));
    }

    const size_t n_nodes = graph_max_nodes(w.hparams);
    std::vector<ggml_backend_t> backends;
    if (backend_gpu) {
        backends.push_back(backend_gpu.get());
    }
    backends.push_back(backend_cpu.get()); // last: it runs whatever the GPU does not support
    sched.reset(ggml_backend_sched_new(backends.data(), nullptr, (int) backends.size(), n_nodes, false, false));
    buf_meta.resize(ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false));
    init_kv();
}

drafter::~drafter() = default;

void drafter::init_backends() {
    backend_cpu = cpu_backend(params.n_threads);
    ggml_backend_dev_t dev_gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
    if (dev_gpu) {
        backend_gpu.reset(ggml_backend_dev_init(dev_gpu, nullptr));
    }
}

void drafter::init_kv() {
    const drafter_hparams & hp = w.hparams;
    const int64_t n_embd_kv = (int64_t) hp.n_head_kv * hp.head_dim;
    const int64_t n_slots   = (int64_t) params.n_ctx + params.n_scratch;
    ctx_kv.reset(ggml_init({/*.mem_size =*/ 2 * (size_t) hp.n_layer * ggml_tensor_overhead(), /*.mem_buffer =*/ nullptr,
                            /*.no_alloc =*/ true}));
    for (int il = 0; il < hp.n_layer; ++il) {
        k_cache.push_back(ggml_new_tensor_2d(ctx_kv.get(), GGML_TYPE_F32, n_embd_kv, n_slots));
        v_cache.push_back(ggml_new_tensor_2d(ctx_kv.get(), GGML_TYPE_F32, n_embd_kv, n_slots));
        ggml_format_name(k_cache.back(), "cache_k_l%d", il);
        ggml_format_name(v_cache.back(), "cache_v_l%d", il);
    }
    ggml_backend_t backend_main = backend_gpu ? backend_gpu.get() : backend_cpu.get();
    buf_kv.reset(ggml_backend_alloc_ctx_tensors(ctx_kv.get(), backend_main));
    if (!buf_kv) {
        throw error(format("cannot allocate the drafter KV cache (%d layers x %" PRId64 " slots) on %s", hp.n_layer, n_slots,
                           ggml_backend_name(backend_main)));
    }
    // every slot a graph reads is written first; zeros keep stale slots finite all the same
    ggml_backend_buffer_clear(buf_kv.get(), 0);
}

// ---- compute ---------------------------------------------------------------------------------

void drafter::compute(const graph_input & in, std::vector<float> & out_feat, std::vector<float> & out_logits) {
    const auto t_start = std::chrono::steady_clock::now();
    const int32_t n_tokens = (int32_t) in.tok.size();
    const int64_t n_embd   = w.hparams.n_embd;

    ggml_context_ptr ctx(ggml_init({/*.mem_size =*/ buf_meta.size(), /*.mem_buffer =*/ buf_meta.data(), /*.no_alloc =*/ true}));
    graph_tensors gt;
    ggml_cgraph * graph = build_graph(ctx.get(), w, k_cache, v_cache, n_tokens, in.kv0, in.n_kv, in.n_out, gt);

    ggml_backend_sched_reset(sched.get());
    if (!ggml_backend_sched_alloc_graph(sched.get(), graph)) {
        throw error(format("cannot allocate the drafter graph (%d positions over %d KV slots)", n_tokens, in.n_kv));
    }
    ggml_backend_tensor_set(gt.tok,  in.tok.data(),  0, ggml_nbytes(gt.tok));
    ggml_backend_tensor_set(gt.feat, in.feat,        0, ggml_nbytes(gt.feat));
    ggml_backend_tensor_set(gt.pos,  in.pos.data(),  0, ggml_nbytes(gt.pos));
    ggml_backend_tensor_set(gt.slot, in.slot.data(), 0, ggml_nbytes(gt.slot));
    ggml_backend_tensor_set(gt.mask, in.mask.data(), 0, ggml_nbytes(gt.mask));
    const enum ggml_status status = ggml_backend_sched_graph_compute(sched.get(), graph);
    if (status != GGML_STATUS_SUCCESS) {
        throw error(format("drafter graph compute failed with status %d (%d positions)", (int) status, n_tokens));
    }
    out_feat.resize((size_t) in.n_out * n_embd);
    out_logits.resize((size_t) in.n_out * w.hparams.n_vocab_draft);
    if (in.n_out > 0) {
        ggml_backend_tensor_get(gt.out_feat,   out_feat.data(),   0, ggml_nbytes(gt.out_feat));
        ggml_backend_tensor_get(gt.out_logits, out_logits.data(), 0, ggml_nbytes(gt.out_logits));
    }
    t_eval_us_acc += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t_start).count();
}

// ---- committed pairs and drafting phases -------------------------------------------------------

void drafter::check_tokens(const llama_token * tok, size_t n) const {
    for (size_t i = 0; i < n; ++i) {
        if (tok[i] < 0 || tok[i] >= w.hparams.target_n_vocab) {
            throw std::invalid_argument(format("token id %d is out of range [0, %d)", tok[i], w.hparams.target_n_vocab));
        }
    }
}

void drafter::push_pairs(const float * feat, const llama_token * tok, int32_t n) {
    if (n < 0 || (n > 0 && (!feat || !tok))) {
        throw std::invalid_argument(format("push_pairs: n must be >= 0 with feat and tok given, got n %d, feat %s, tok %s", n,
                                           feat != nullptr ? "given" : "null", tok != nullptr ? "given" : "null"));
    }
    append_pairs(feat, tok, n);
}

void drafter::push_unread(const llama_token * tok, int32_t n) {
    if (n < 0 || (n > 0 && !tok)) {
        throw std::invalid_argument(format("push_unread: n must be >= 0 with tok given, got n %d, tok %s", n,
                                           tok != nullptr ? "given" : "null"));
    }
    append_pairs(nullptr, tok, n);
    n_read = n_pairs();
}

void drafter::append_pairs(const float * feat, const llama_token * tok, int32_t n) {
    if (n_pairs() + n > params.n_ctx) {
        throw context_full(format("drafter context full: %d pairs + %d new exceed n_ctx %d", n_pairs(), n, params.n_ctx));
    }
    check_tokens(tok, n);
    const size_t n_feat = (size_t) n * w.hparams.n_embd;
    if (feat != nullptr) {
        feat_ctx.insert(feat_ctx.end(), feat, feat + n_feat);
    } else {
        // row i stays pair i's: zeros stand where no feature was computed, and are never read
        feat_ctx.resize(feat_ctx.size() + n_feat, 0.0f);
    }
    tok_ctx.insert(tok_ctx.end(), tok, tok + n);
    phase_open = false;
}

void drafter::truncate(int32_t n) {
    if (n < 0) {
        throw std::invalid_argument(format("truncate: n_pairs %d is negative", n));
    }
    n = std::min(n, n_pairs());
    feat_ctx.resize((size_t) n * w.hparams.n_embd);
    tok_ctx.resize(n);
    n_cached   = std::min(n_cached, n);
    n_read     = std::min(n_read, n);
    if (n_cached <= n_skip) {
        // nothing evaluated is left in the window: the pairs kept are evaluated again, and windowed again
        n_cached = n_skip = 0;
    }
    phase_open = false;
}

int32_t drafter::window_start(int32_t end) const {
    const int32_t k = w.hparams.block_size;
    const int32_t window = std::max(k, params.n_window / k * k);
    const int32_t start = params.n_window > 0 && end - n_cached > window ? end - window : n_cached;
    return std::max(start, std::min(n_read, end));
}

int32_t drafter::backlog(int32_t n_more) const {
    const int32_t n = n_pairs() + n_more;
    return n - window_start(n - w.hparams.block_size);
}

void drafter::skip_backlog(int32_t end) {
    const int32_t start = window_start(end);
    if (start > n_cached) {
        n_skip = n_cached = start;
    }
}

void drafter::eval_span(int32_t c0, int32_t c1, std::vector<float> & out_feat, std::vector<float> & out_logits) {
    const int32_t n = n_pairs();
    const int32_t k = w.hparams.block_size;
    const int32_t n_tokens = c1 - c0;
    graph_input in;
    in.tok.assign(tok_ctx.begin() + c0, tok_ctx.begin() + c1);
    in.feat  = feat_ctx.data() + (size_t) c0 * w.hparams.n_embd;
    in.kv0   = n_skip;
    in.n_kv  = c1;
    in.n_out = c1 == n ? std::min(k, n) : 0;
    const int32_t n_vis = c1 - n_skip;
    in.mask.assign((size_t) n_tokens * n_vis, -INFINITY);
    for (int32_t i = 0; i < n_tokens; ++i) {
        const int32_t q = c0 + i;
        // blocks are aligned to n; q sees the window's cache, earlier blocks and its whole block
        const int32_t q_block_end = n - (n - 1 - q) / k * k;
        std::fill(in.mask.begin() + (size_t) i * n_vis, in.mask.begin() + (size_t) i * n_vis + (q_block_end - n_skip), 0.0f);
        in.pos.push_back(q);
        in.slot.push_back(q);
    }
    compute(in, out_feat, out_logits);
}

void drafter::eval_range(int32_t c0, int32_t end, std::vector<float> & out_feat, std::vector<float> & out_logits) {
    const int32_t k       = w.hparams.block_size;
    const int32_t n_chunk = std::max(k, params.n_batch / k * k);
    // chunk ends are block ends (end - c1 is a multiple of k), so no block straddles two graphs
    for (int32_t c1 = c0 + (end - c0 - 1) % n_chunk + 1; c0 < end; c0 = c1, c1 += n_chunk) {
        eval_span(c0, c1, out_feat, out_logits);
    }
}

void drafter::catch_up(int32_t n_pending) {
    const int32_t end = n_pairs() - w.hparams.block_size;
    skip_backlog(end);
    if (end - n_cached > n_pending) {
        std::vector<float> no_feat, no_logits;
        eval_range(n_cached, end, no_feat, no_logits);
        n_cached = end;
    }
    phase_open = false;
}

void drafter::eval_context(std::vector<float> & out_feat, std::vector<float> & out_logits) {
    const int32_t n = n_pairs();
    if (n == 0) {
        throw std::invalid_argument("eval_context needs at least one committed pair");
    }
    skip_backlog(std::max(0, n - w.hparams.block_size));
    eval_range(std::min(n_cached, std::max(0, n - w.hparams.block_size)), n, out_feat, out_logits);
    n_cached   = n;
    phase_open = true;
    block_parent.clear();
    block_level.clear();
}

void drafter::eval_blocks(const std::vector<drafter_block> & blocks, std::vector<float> & out_feat,
                          std::vector<float> & out_logits) {
    if (!phase_open) {
        throw std::invalid_argument("eval_blocks needs eval_context after the last push_pairs or truncate");
    }
    const int32_t n = n_pairs();
    const int32_t k = w.hparams.block_size;
    const size_t  n_feat = (size_t) k * w.hparams.n_embd;
    const int32_t n_new  = (int32_t) blocks.size();
    const int32_t n_all  = (int32_t) block_parent.size() + n_new;
    if ((int64_t) n_all * k > params.n_scratch) {
        throw context_full(format("tree blocks need %d scratch positions, n_scratch is %d", n_all * k, params.n_scratch));
    }
    std::vector<int32_t> parent = block_parent;
    std::vector<int32_t> level  = block_level;
    graph_input in;
    std::vector<float> feat;
    for (const drafter_block & blk : blocks) {
        const int32_t ib = (int32_t) parent.size();
        if (blk.parent < -1 || blk.parent >= ib || blk.feat.size() != n_feat || blk.tok.size() != (size_t) k) {
            throw std::invalid_argument(format("tree block %d: parent %d (expected -1 .. %d), %zu features (expected %zu), %zu tokens (expected %d)",
                                               ib, blk.parent, ib - 1, blk.feat.size(), n_feat, blk.tok.size(), k));
        }
        check_tokens(blk.tok.data(), blk.tok.size());
        parent.push_back(blk.parent);
        level.push_back(blk.parent < 0 ? 1 : level[blk.parent] + 1);
        feat.insert(feat.end(), blk.feat.begin(), blk.feat.end());
        in.tok.insert(in.tok.end(), blk.tok.begin(), blk.tok.end());
    }
    in.feat  = feat.data();
    in.kv0   = n_skip;
    in.n_kv  = n + n_all * k;
    in.n_out = n_new * k;
    const int32_t n_vis = in.n_kv - n_skip;
    in.mask.assign((size_t) in.n_out * n_vis, -INFINITY);
    for (int32_t i = 0; i < in.n_out; ++i) {
        const int32_t ib = n_all - n_new + i / k;
        float * row = in.mask.data() + (size_t) i * n_vis; // column c: slot n_skip + c
        float * blocks_col = row + (n - n_skip);           // the scratch slots, from n
        std::fill(row, blocks_col, 0.0f);
        for (int32_t a = ib; a >= 0; a = parent[a]) { // own block, then the parent chain
            std::fill(blocks_col + a * k, blocks_col + (a + 1) * k, 0.0f);
        }
        in.pos.push_back(n + (level[ib] - 1) * k + i % k);
        in.slot.push_back(n + ib * k + i % k);
    }
    if (n_new > 0) {
        compute(in, out_feat, out_logits);
    } else {
        out_feat.clear();
        out_logits.clear();
    }
    block_parent = std::move(parent);
    block_level  = std::move(level);
}

llama_token drafter::draft_to_target(int32_t id_draft) const {
    if (id_draft < 0 || id_draft >= w.hparams.n_vocab_draft) {
        throw std::invalid_argument(format("draft token id %d is out of range [0, %d)", id_draft, w.hparams.n_vocab_draft));
    }
    return w.d2t.empty() ? id_draft : w.d2t[id_draft];
}

} // namespace fe
