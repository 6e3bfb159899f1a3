// The generation loop: prefill, then cycles of draft -> one-decode tree verification -> commit -> emit.
#include "falcon-edge/engine.h"

#include "falcon-edge/batch-owner.h"
#include "falcon-edge/errors.h"
#include "falcon-edge/kv-commit.h"
#include "falcon-edge/ngram.h"
#include "falcon-edge/sampling.h"
#include "falcon-edge/tree-batch.h"
#include "falcon-edge/verify.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace fe {

static double now_us() {
    using namespace std::chrono;
    return (double) duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

// llama.cpp logs go to stderr only when verbose (errors always)
static void log_callback(enum ggml_log_level level, const char * text, void * user_data) {
    const bool verbose = user_data != nullptr;
    if (verbose || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

// prompt tokens from which a prefill pays for the extra one-token decode that lets the others skip
// the LM head (~60 ms for a 1.5B Q4_K_M target on 2 cores, against ~2 ms of LM head per token)
static constexpr int32_t N_SKIP_HEAD_MIN = 32;

// the largest tree of a cycle whose budget follows the cost curve while no curve is known; with one,
// the largest size it was measured for (16 on a CPU, 64 with a GPU: cost_curve.py)
static constexpr int32_t N_NODES_AUTO = 16;

// cb_eval of the target context: while skip_head_ is set, the graph stops at the final norm, so
// the decode yields the features (embeddings) of its tokens but no logits. The final norm is
// `result_norm`, renamed `result_embd_pooled` once embeddings are on (pooling none: the same tensor)
static bool stop_at_final_norm(ggml_tensor * t, bool ask, void * data) {
    if (ask) {
        return static_cast<const engine *>(data)->skips_head() &&
               (std::strcmp(t->name, "result_embd_pooled") == 0 || std::strcmp(t->name, "result_norm") == 0);
    }
    return false;
}

static bool has_gpu() {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        const auto type = ggml_backend_dev_type(ggml_backend_dev_get(i));
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            return true;
        }
    }
    return false;
}

// the median of timings (the upper one of an even count)
static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

engine::engine(const std::string & path_model, const engine_params & params) : path_(path_model), params_(params) {
    if (params.n_ctx < 8) {
        throw std::invalid_argument(format("n_ctx must be at least 8, got %d", params.n_ctx));
    }
    if (params.n_batch < 1 || params.n_batch > params.n_ctx) {
        throw std::invalid_argument(format("n_batch must be in [1, n_ctx %d], got %d", params.n_ctx, params.n_batch));
    }
    if (params.n_seq_max < 1 || params.n_seq_max > (int32_t) llama_max_parallel_sequences()) {
        throw std::invalid_argument(format("n_seq_max must be in [1, %d], got %d", (int) llama_max_parallel_sequences(), params.n_seq_max));
    }
    llama_log_set(log_callback, params.verbose ? (void *) 1 : nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params.n_gpu_layers;
    model_ = llama_model_load_from_file(path_model.c_str(), mp);
    if (model_ == nullptr) {
        throw model_error(format("failed to load model from '%s'", path_model.c_str()));
    }
    vocab_ = llama_model_get_vocab(model_);
    if (llama_model_is_recurrent(model_) || llama_model_is_hybrid(model_) || llama_model_is_diffusion(model_)) {
        const std::string arch = meta("general.architecture");
        const char * kind = llama_model_is_diffusion(model_) ? "diffusion" : "recurrent or hybrid";
        release();
        throw model_error(format("'%s' is a %s model (%s): tree verification and prefix reuse roll the KV cache back, "
                                 "which only attention-only autoregressive models allow", path_model.c_str(), kind,
                                 arch.c_str()));
    }

    const int32_t n_threads = params.n_threads > 0 ? params.n_threads : (int32_t) std::max(1u, std::thread::hardware_concurrency());
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = params.n_ctx;
    cp.n_batch         = params.n_batch;
    cp.n_ubatch        = params.n_batch; // a tree must be one ubatch
    cp.n_seq_max       = params.n_seq_max;
    cp.n_outputs_max   = (uint32_t) std::max(params.n_batch, params.n_seq_max); // reserving asks one output per sequence
    cp.kv_unified      = true;           // required for multi-seq tree tokens
    cp.n_threads       = n_threads;
    cp.n_threads_batch = n_threads;
    cp.flash_attn_type = params.flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf         = true;
    cp.abort_callback  = [](void * data) { return static_cast<engine *>(data)->cancel_.load(); };
    cp.abort_callback_data = this;
    // stopping a graph early ends its split only: worth it where the whole graph is one CPU split
    head_skippable_ = !has_gpu();
    if (head_skippable_) {
        cp.cb_eval           = stop_at_final_norm;
        cp.cb_eval_user_data = this;
    }
    ctx_ = llama_init_from_model(model_, cp);
    if (ctx_ == nullptr) {
        release();
        throw model_error(format("failed to create a context of %d tokens for '%s'", params.n_ctx, path_model.c_str()));
    }
    try {
        if (head_skippable_ && params.path_head) {
            init_path_head(n_threads);
        }
        proposers_.emplace_back("ngram", std::make_unique<ngram_proposer>());
    } catch (...) {
        release();
        throw;
    }
}

void engine::init_path_head(int32_t n_threads) {
    std::unique_ptr<target_head> head;
    try {
        head = std::make_unique<target_head>(path_, n_embd(), n_vocab(), n_threads);
    } catch (const model_error &) {
        return; // no head tensor this class can map: the logits come from the decode
    }
    // one token decoded with its logits and its feature: the path head must give the same logits bit
    // for bit (a graph that scales or caps the logits after the product, or a head the CPU backend
    // repacked for another kernel, would not)
    batch_owner bo(1);
    bo.b.token[0] = token_bos() >= 0 ? token_bos() : 0;
    bo.b.pos[0] = 0;
    bo.b.n_seq_id[0] = 1;
    bo.b.seq_id[0][0] = 0;
    bo.b.logits[0] = 1;
    bo.b.n_tokens = 1;
    llama_set_embeddings(ctx_, true);
    bool same = false;
    if (llama_decode(ctx_, bo.b) == 0) {
        std::vector<float> out(n_vocab());
        head->logits(llama_get_embeddings_ith(ctx_, 0), 1, out.data());
        same = std::memcmp(out.data(), llama_get_logits_ith(ctx_, 0), out.size() * sizeof(float)) == 0;
    }
    llama_memory_clear(llama_get_memory(ctx_), true);
    llama_set_embeddings(ctx_, false);
    if (same) {
        head_ = std::move(head);
    }
}

void engine::release() {
    proposers_.clear();
    head_.reset();
    llama_free(ctx_);
    llama_model_free(model_);
    ctx_ = nullptr;
    model_ = nullptr;
}

engine::~engine() { release(); }

// ---- vocabulary and metadata ----

std::vector<llama_token> engine::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), add_special, parse_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), add_special, parse_special);
    }
    out.resize(std::max(n, 0));
    return out;
}

std::string engine::token_to_piece(llama_token id, bool special) const {
    if (id < 0 || id >= n_vocab()) {
        throw std::invalid_argument(format("token id %d is outside the vocabulary [0, %d)", id, n_vocab()));
    }
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, id, buf, sizeof(buf), 0, special);
    if (n >= 0) {
        return std::string(buf, n);
    }
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab_, id, big.data(), (int32_t) big.size(), 0, special);
    big.resize(std::max(n, 0));
    return big;
}

std::string engine::meta(const std::string & key) const {
    const int32_t n = llama_model_meta_val_str(model_, key.c_str(), nullptr, 0);
    if (n < 0) {
        return "";
    }
    std::string out(n + 1, '\0');
    llama_model_meta_val_str(model_, key.c_str(), out.data(), out.size());
    out.resize(n);
    return out;
}

int32_t engine::n_vocab() const { return llama_vocab_n_tokens(vocab_); }
int32_t engine::n_embd() const { return llama_model_n_embd(model_); }
int32_t engine::n_ctx() const { return (int32_t) llama_n_ctx(ctx_); }
llama_token engine::token_bos() const { return llama_vocab_bos(vocab_); }
llama_token engine::token_eos() const { return llama_vocab_eos(vocab_); }
bool engine::is_eog(llama_token id) const { return llama_vocab_is_eog(vocab_, id); }

// ---- speculation ----

void engine::set_proposer(const std::string & mode, std::unique_ptr<proposer> p) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto & entry : proposers_) {
        if (entry.first == mode) {
            entry.second = std::move(p);
            return;
        }
    }
    proposers_.emplace_back(mode, std::move(p));
}

bool engine::has_proposer(const std::string & mode) const { return proposer_for(mode) != nullptr; }

proposer * engine::proposer_for(const std::string & mode) const {
    for (const auto & entry : proposers_) {
        if (entry.first == mode) {
            return entry.second.get();
        }
    }
    return nullptr;
}

void engine::set_verify_cost(const std::vector<double> & c) {
    for (size_t i = 0; i < c.size(); ++i) {
        if (!(std::isfinite(c[i]) && c[i] > 0.0)) {
            throw std::invalid_argument(format("verify cost of %d nodes must be finite and positive, got %g", (int) i + 1, c[i]));
        }
    }
    std::vector<double> rel(c.size());
    for (size_t i = 0; i < c.size(); ++i) {
        rel[i] = c[i] / c[0];
    }
    std::lock_guard<std::mutex> lock(mutex_);
    cost_.set_curve(rel);
}

std::vector<double> engine::verify_cost() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cost_.curve();
}

std::vector<double> engine::verify_cost_estimate() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<double> out(cost_.n_max());
    for (int32_t n = 1; n <= cost_.n_max(); ++n) {
        out[n - 1] = cost_.cost(n);
    }
    return out;
}

void engine::set_head_cost(double row, double extra) {
    if (!(row >= 0.0) || !(extra >= 0.0)) {
        throw std::invalid_argument(format("path head costs must be >= 0, got row %g and extra %g", row, extra));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    cost_.set_head_cost(row, extra);
}

std::pair<double, double> engine::head_cost() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return {cost_.head_row(), cost_.head_extra()};
}

std::vector<llama_token> engine::cached_tokens() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return tokens_;
}

std::pair<double, double> engine::measure_head_cost(int32_t n_rows, int32_t n_reps) {
    if (n_rows < 2 || n_reps < 1) {
        throw std::invalid_argument(format("cannot measure the path head with %d rows x %d reps (need >= 2 rows, >= 1 rep)",
                                           n_rows, n_reps));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (!head_) {
        return {0.0, 0.0};
    }
    // the product does not depend on the values: any features time it
    std::vector<float> feat((size_t) n_rows * n_embd(), 0.01f);
    std::vector<float> out((size_t) n_rows * n_vocab());
    auto time_call = [&](int32_t m) {
        const double t0 = now_us();
        head_->logits(feat.data(), m, out.data());
        return now_us() - t0;
    };
    time_call(1); // warms up both shapes
    time_call(n_rows);
    std::vector<double> t_one, t_many;
    for (int32_t rep = 0; rep < n_reps; ++rep) {
        t_one.push_back(time_call(1));
        t_many.push_back(time_call(n_rows));
    }
    const double row = median(t_one);
    return {row, std::max(0.0, (median(t_many) - row) / (n_rows - 1))};
}

std::tuple<double, double, double> engine::measure_draft_cost(const std::vector<llama_token> & tokens,
                                                              const spec_params & sp, int32_t n_nodes_max, int32_t n_reps) {
    proposer * dft = proposer_for("falcon");
    if (dft == nullptr) {
        throw std::invalid_argument("cannot measure the drafting cost: no drafter is loaded");
    }
    const int32_t n = (int32_t) tokens.size();
    if (n_reps < 1 || n_nodes_max < 2 || n_nodes_max > params_.n_batch || n < 2 || n >= n_ctx()) {
        throw std::invalid_argument(format("cannot measure drafting %d nodes x %d reps after %d tokens (n_batch %d, n_ctx %d)",
                                           n_nodes_max, n_reps, n, params_.n_batch, n_ctx()));
    }
    // the context as a request leaves it: the tokens before the root evaluated, each paired with the next
    const std::vector<llama_token> context(tokens.begin(), tokens.end() - 1);
    const std::vector<float> feats = evaluate(context, true);
    std::tuple<double, double, double> out;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        // the catch-up over the context but its last block, timed the second time (the first warms up)
        double t_pair = 0.0;
        for (int32_t warm = 0; warm < 2; ++warm) {
            dft->reset(0);
            dft->accept(feats.data(), tokens.data() + 1, n - 1);
            const int32_t before = dft->backlog(0);
            const double t0 = now_us();
            dft->catch_up(0);
            t_pair = (now_us() - t0) / std::max(1, before - dft->backlog(0));
        }
        rng r(0);
        const sampling_params greedy;
        tree t;
        auto time_draft = [&]() {
            tree_init(t, tokens.back());
            const double t0 = now_us();
            dft->draft(tokens, n_nodes_max, sp, greedy, r, t);
            return now_us() - t0;
        };
        llama_memory_t mem = llama_get_memory(ctx_);
        llama_set_embeddings(ctx_, false);
        auto time_step = [&]() {
            batch_owner bo(1);
            bo.b.token[0] = tokens.back();
            bo.b.pos[0] = n - 1;
            bo.b.n_seq_id[0] = 1;
            bo.b.seq_id[0][0] = 0;
            bo.b.logits[0] = 1;
            bo.b.n_tokens = 1;
            const double t0 = now_us();
            const int rc = llama_decode(ctx_, bo.b);
            llama_synchronize(ctx_);
            const double dt = now_us() - t0;
            check_decode(rc, "drafting-cost step");
            llama_memory_seq_rm(mem, 0, n - 1, -1);
            return dt;
        };
        time_draft(); // warms up
        time_step();
        // interleaved, so that a slow stretch of the host slows both alike
        std::vector<double> t_draft, t_step;
        for (int32_t rep = 0; rep < n_reps; ++rep) {
            t_draft.push_back(time_draft());
            t_step.push_back(time_step());
        }
        out = {median(t_draft), median(t_step), t_pair};
    }
    reset();
    return out;
}

void engine::set_draft_cost(double d, double pair) {
    if (!(std::isfinite(d) && d >= 0.0 && std::isfinite(pair) && pair >= 0.0)) {
        throw std::invalid_argument(format("drafting costs must be finite and >= 0, got %g a cycle and %g a pair", d, pair));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    cost_.set_draft_cost(d, pair);
}

double engine::draft_cost() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cost_.draft_cost();
}

std::vector<double> engine::measure_verify_cost(int32_t n_max, int32_t n_reps, int32_t n_depth) {
    if (n_max < 1 || n_max > params_.n_batch || n_reps < 1 || n_depth < 1 || n_depth + n_max > n_ctx()) {
        throw std::invalid_argument(format("cannot measure %d nodes x %d reps after %d tokens (n_batch %d, n_ctx %d)",
                                           n_max, n_reps, n_depth, params_.n_batch, n_ctx()));
    }
    reset();
    std::lock_guard<std::mutex> lock(mutex_);
    llama_memory_t mem = llama_get_memory(ctx_);
    llama_set_embeddings(ctx_, false);
    // a context of ordinary tokens (ids cycling through the lower vocabulary)
    std::vector<llama_token> filler(n_depth);
    for (int32_t i = 0; i < n_depth; ++i) {
        filler[i] = 100 + (i * 7) % std::max(1, std::min(n_vocab() - 100, 1000));
    }
    for (int32_t start = 0; start < n_depth; start += params_.n_batch) {
        const int32_t cnt = std::min(params_.n_batch, n_depth - start);
        batch_owner bo(cnt);
        for (int32_t i = 0; i < cnt; ++i) {
            bo.b.token[i] = filler[start + i];
            bo.b.pos[i] = start + i;
            bo.b.n_seq_id[i] = 1;
            bo.b.seq_id[i][0] = 0;
            bo.b.logits[i] = 0;
        }
        bo.b.n_tokens = cnt;
        check_decode(llama_decode(ctx_, bo.b), "cost-curve context");
    }
    // each size is timed right after a one-node probe and its cost taken as the median of these
    // paired ratios: load from other processes and clock changes slow both runs of a pair alike
    auto time_decode = [&](int32_t n) {
        batch_owner bo(n);
        for (int32_t i = 0; i < n; ++i) {
            bo.b.token[i] = filler[i % n_depth];
            bo.b.pos[i] = n_depth + i;
            bo.b.n_seq_id[i] = 1;
            bo.b.seq_id[i][0] = 0;
            bo.b.logits[i] = 1; // verification needs every node's logits, or with the path head its feature
        }
        bo.b.n_tokens = n;
        // as generate() decodes: a tree with the path head up to the final norm, one node with its head
        const bool on_path = head_ != nullptr && n > 1;
        llama_set_embeddings(ctx_, on_path);
        skip_head_ = on_path;
        const double t0 = now_us();
        const int rc = llama_decode(ctx_, bo.b);
        llama_synchronize(ctx_);
        const double dt = now_us() - t0;
        skip_head_ = false;
        check_decode(rc, "cost-curve probe");
        llama_memory_seq_rm(mem, 0, n_depth, -1);
        return dt;
    };
    for (int32_t n = 1; n <= n_max; ++n) {
        time_decode(n); // warms up this shape
    }
    std::vector<double> t_one;
    std::vector<std::vector<double>> ratio(n_max);
    auto time_pair = [&](int32_t n) {
        const double t1 = time_decode(1);
        t_one.push_back(t1);
        ratio[n - 1].push_back(n == 1 ? 1.0 : time_decode(n) / t1);
    };
    // each rep starts at another size, so that a slow stretch of the host falls on other sizes in
    // other reps and the median drops it
    for (int32_t rep = 0; rep < n_reps; ++rep) {
        for (int32_t i = 0; i < n_max; ++i) {
            time_pair(1 + (i + rep * n_max / n_reps) % n_max);
        }
    }
    // a size that measured cheaper than the one below it draws the tree sizing to it, so both are
    // timed n_reps more times: a kernel that really batches better there (Q4_K at 16 nodes on
    // AVX-512) keeps its dip, one slow or fast stretch of the host does not
    std::vector<int32_t> recheck;
    for (int32_t n = 2; n <= n_max; ++n) {
        if (median(ratio[n - 1]) < median(ratio[n - 2])) {
            if (n > 2 && (recheck.empty() || recheck.back() != n - 1)) {
                recheck.push_back(n - 1);
            }
            recheck.push_back(n);
        }
    }
    for (int32_t rep = 0; rep < n_reps; ++rep) {
        for (int32_t n : recheck) {
            time_pair(n);
        }
    }
    const double t1 = median(t_one);
    std::vector<double> out(n_max);
    for (int32_t n = 1; n <= n_max; ++n) {
        out[n - 1] = t1 * median(ratio[n - 1]);
    }
    llama_memory_clear(mem, true);
    llama_set_embeddings(ctx_, false);
    return out;
}

void engine::reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    llama_memory_clear(llama_get_memory(ctx_), true);
    tokens_.clear();
    for (auto & entry : proposers_) {
        entry.second->reset(0);
    }
}

// ---- probes for tests ----

std::vector<float> engine::evaluate(const std::vector<llama_token> & tokens, bool need_feat) {
    reset();
    std::lock_guard<std::mutex> lock(mutex_);
    if (tokens.empty() || (int32_t) tokens.size() >= n_ctx()) {
        throw std::invalid_argument(format("evaluation needs 1 to %d tokens, got %d", n_ctx() - 1, (int) tokens.size()));
    }
    for (llama_token id : tokens) {
        if (id < 0 || id >= n_vocab()) {
            throw std::invalid_argument(format("token %d is outside the vocabulary [0, %d)", id, n_vocab()));
        }
    }
    gen_stats st;
    std::vector<float> feats, no_logits;
    prefill(tokens, 0, need_feat ? 0 : (int32_t) tokens.size(), false, st, feats, no_logits);
    tokens_ = tokens;
    return feats;
}

void engine::prefill_only(const std::vector<llama_token> & tokens) { evaluate(tokens, false); }

std::vector<float> engine::features(const std::vector<llama_token> & tokens) { return evaluate(tokens, true); }

void engine::self_distill(const std::vector<std::vector<llama_token>> & prompts, const self_distill_params & params,
                          const distilled_callback & on_done) {
    std::lock_guard<std::mutex> lock(mutex_);
    cancel_ = false;
    self_distill_params p = params;
    p.n_threads = p.n_threads > 0 ? p.n_threads : params_.n_threads;
    fe::self_distill(model_, prompts, p, cancel_, on_done);
}

std::vector<float> engine::tree_logits(const std::vector<llama_token> & tokens, const std::vector<int32_t> & parents,
                                       bool path_head) {
    std::lock_guard<std::mutex> lock(mutex_);
    const tree t = tree_from_parents(tokens, parents, ORIGIN_DRAFTER, {});
    if (t.size() > params_.n_batch) {
        throw std::invalid_argument(format("a probe tree must fit one batch of n_batch %d, got %d nodes", params_.n_batch,
                                           t.size()));
    }
    if (path_head && !head_) {
        throw std::invalid_argument("this engine has no path head (a GPU target, path_head off, or a head that failed its check)");
    }
    const int32_t n_past = (int32_t) tokens_.size();
    tree_batch tb;
    tree_batch_build(tb, t, n_past, ctx_);
    llama_set_embeddings(ctx_, path_head);
    skip_head_ = path_head;
    const int rc = llama_decode(ctx_, tb.batch);
    skip_head_ = false;
    std::vector<float> out;
    if (rc == 0) {
        out.resize((size_t) t.size() * n_vocab());
        std::vector<float> feat(path_head ? (size_t) t.size() * n_embd() : 0);
        for (int32_t u = 0; u < t.size(); ++u) {
            if (path_head) {
                const float * f = llama_get_embeddings_ith(ctx_, tb.row_of[u]);
                std::copy(f, f + n_embd(), feat.begin() + (size_t) u * n_embd());
            } else {
                const float * l = llama_get_logits_ith(ctx_, tb.row_of[u]);
                std::copy(l, l + n_vocab(), out.begin() + (size_t) u * n_vocab());
            }
        }
        if (path_head) {
            head_->logits(feat.data(), t.size(), out.data());
        }
    }
    llama_set_embeddings(ctx_, false);
    kv_commit(ctx_, 0, n_past - 1, 0); // back to the cached tokens only
    check_decode(rc, format("probe tree of %d nodes", t.size()));
    return out;
}

// ---- generation ----

int32_t engine::first_feature_row(int32_t n_keep, int32_t n_read) const {
    return n_keep + (std::max(n_read, n_keep) - n_keep) / params_.n_batch * params_.n_batch;
}

void engine::prefill(const std::vector<llama_token> & prompt, int32_t n_keep, int32_t n_read, bool need_logits,
                     gen_stats & st, std::vector<float> & feats, std::vector<float> & logits) {
    const int32_t n = (int32_t) prompt.size();
    const int32_t n_embd_tgt = n_embd();
    const bool need_feat = n_read < n;
    feats.assign((size_t) (n - n_read) * n_embd_tgt, 0.0f);
    // llama.cpp makes every token of a decode with embeddings on an output, whatever the batch marks, so only the
    // chunks holding a token from n_read on turn them on; the chunks stay plain decoding's (batched kernels round by
    // batch shape: a cut at n_read flipped a near-tie at the first token, Q4_K_M, a 371-token prompt). Their rows
    // skip the LM head: the last token's logits then come from the path head over its feature, or without one from
    // a decode of its own (when the prompt is long enough for that to pay)
    const bool by_path = need_feat && need_logits && head_ != nullptr;
    const bool skip = need_feat && head_skippable_ && (!need_logits || by_path || n - n_read > N_SKIP_HEAD_MIN);
    const int32_t n_head = skip && need_logits && !by_path ? n - 1 : n; // tokens [n_keep, n_head) skip the head
    const int32_t first_feat = need_feat ? first_feature_row(n_keep, n_read) : n;
    batch_owner bo(params_.n_batch);
    int32_t n_rows_feat = 0;
    for (int32_t start = n_keep; start < n;) {
        const int32_t stop = std::min(start + params_.n_batch, start < n_head ? n_head : n);
        const int32_t cnt = stop - start;
        const bool feat_rows = start >= first_feat;
        for (int32_t i = 0; i < cnt; ++i) {
            bo.b.token[i] = prompt[start + i];
            bo.b.pos[i] = start + i;
            bo.b.n_seq_id[i] = 1;
            bo.b.seq_id[i][0] = 0;
            bo.b.logits[i] = start + i >= n_read || start + i == n - 1;
        }
        bo.b.n_tokens = cnt;
        llama_set_embeddings(ctx_, feat_rows);
        skip_head_ = skip && start < n_head;
        const int rc = llama_decode(ctx_, bo.b);
        skip_head_ = false;
        check_decode(rc, format("prompt tokens %d..%d", start, stop - 1));
        n_rows_feat += feat_rows ? cnt : 0;
        for (int32_t i = std::max(0, n_read - start); i < cnt; ++i) {
            const float * f = llama_get_embeddings_ith(ctx_, i);
            std::copy(f, f + n_embd_tgt, feats.begin() + (size_t) (start + i - n_read) * n_embd_tgt);
        }
        start = stop;
    }
    st.n_prefill = n - n_keep;
    st.n_prompt_features = n_rows_feat;
    if (by_path) {
        logits.resize(n_vocab());
        head_->logits(feats.data() + (size_t) (n - 1 - n_read) * n_embd_tgt, 1, logits.data());
    } else if (need_logits) {
        const float * last = llama_get_logits_ith(ctx_, -1);
        logits.assign(last, last + n_vocab());
    }
}

// emitted text with stop strings: holds back a tail that could still become a stop string
struct text_emitter {
    const std::vector<std::string> & stop;
    std::string text;
    size_t n_sent = 0;

    // appends a piece; returns true when a stop string completed (text is cut before it)
    bool push(const std::string & piece) {
        const size_t old = text.size();
        text += piece;
        for (const auto & s : stop) {
            if (s.empty()) {
                continue;
            }
            const size_t from = old >= s.size() - 1 ? old - (s.size() - 1) : 0;
            const size_t pos = text.find(s, from);
            if (pos != std::string::npos) {
                text.resize(pos);
                return true;
            }
        }
        return false;
    }

    // text that can be shown now (everything when final)
    std::string take(bool final) {
        size_t safe = text.size();
        for (size_t i = 0; !final && i < stop.size(); ++i) {
            const std::string & s = stop[i];
            for (size_t k = std::min(s.size() - 1, text.size()); k > 0; --k) {
                if (text.compare(text.size() - k, k, s, 0, k) == 0) {
                    safe = std::min(safe, text.size() - k);
                    break;
                }
            }
        }
        safe = std::max(safe, n_sent);
        std::string out = text.substr(n_sent, safe - n_sent);
        n_sent = safe;
        return out;
    }
};

static void validate(const std::vector<llama_token> & prompt, const generate_params & gp, int32_t n_vocab, int32_t n_ctx) {
    if (prompt.empty()) {
        throw std::invalid_argument("prompt is empty");
    }
    if ((int32_t) prompt.size() >= n_ctx) {
        throw context_full(format("prompt of %d tokens does not fit: n_ctx %d", (int) prompt.size(), n_ctx));
    }
    for (llama_token id : prompt) {
        if (id < 0 || id >= n_vocab) {
            throw std::invalid_argument(format("prompt token %d is outside the vocabulary [0, %d)", id, n_vocab));
        }
    }
    const sampling_params & sp = gp.sampling;
    if (!(sp.temperature >= 0.0f)) {
        throw std::invalid_argument(format("temperature must be >= 0, got %g", sp.temperature));
    }
    if (!(sp.top_p > 0.0f && sp.top_p <= 1.0f)) {
        throw std::invalid_argument(format("top_p must be in (0, 1], got %g", sp.top_p));
    }
    if (!(sp.min_p >= 0.0f && sp.min_p <= 1.0f)) {
        throw std::invalid_argument(format("min_p must be in [0, 1], got %g", sp.min_p));
    }
    if (!(sp.repeat_penalty > 0.0f)) {
        throw std::invalid_argument(format("repeat_penalty must be > 0, got %g", sp.repeat_penalty));
    }
    if (gp.spec.top_k_draft < 1 || gp.spec.n_passes < 1) {
        throw std::invalid_argument(format("top_k_draft and n_passes must be >= 1, got %d and %d", gp.spec.top_k_draft,
                                           gp.spec.n_passes));
    }
    if (gp.spec.n_nodes_max < 0 || gp.spec.depth_max < 1) {
        throw std::invalid_argument(format("tree budget must be >= 0 and depth_max >= 1, got %d and %d", gp.spec.n_nodes_max, gp.spec.depth_max));
    }
    const auto & parent = gp.spec.preset_parent;
    const auto & rank = gp.spec.preset_rank;
    if (parent.size() != rank.size()) {
        throw std::invalid_argument(format("a tree preset needs one parent per rank, got %d parents and %d ranks",
                                           (int) parent.size(), (int) rank.size()));
    }
    for (size_t i = 0; i < rank.size(); ++i) {
        if (parent[i] < -1 || parent[i] >= (int32_t) i || rank[i] < 0 || rank[i] >= 64) {
            throw std::invalid_argument(format("tree preset node %d needs a parent in [-1, %d) and a rank in [0, 64), got %d and %d",
                                               (int) i, (int) i, parent[i], rank[i]));
        }
    }
}

gen_result engine::generate(const std::vector<llama_token> & prompt, const generate_params & gp, const chunk_callback & cb) {
    std::lock_guard<std::mutex> lock(mutex_);
    validate(prompt, gp, n_vocab(), n_ctx());
    // the drafter (costly, gated by the cost model) and n-gram lookup (free, every cycle), merged
    // into one tree in falcon mode unless ngram_branches is 0
    proposer * dft = nullptr;
    proposer * ngram = nullptr;
    if (gp.spec.mode != "plain") {
        proposer * prop = proposer_for(gp.spec.mode);
        if (prop == nullptr) {
            throw std::invalid_argument(format("speculation mode '%s' is not available (plain, ngram%s)", gp.spec.mode.c_str(),
                                               proposer_for("falcon") != nullptr ? ", falcon" : ""));
        }
        dft = gp.spec.mode == "ngram" ? nullptr : prop;
        ngram = gp.spec.mode == "ngram" || gp.spec.ngram_branches > 0 ? proposer_for("ngram") : nullptr;
    }
    cancel_ = false;
    const bool greedy = gp.sampling.temperature <= 0.0f;
    const int32_t n_embd_tgt = n_embd();
    gen_result res;
    gen_stats & st = res.stats;
    st.n_prompt = (int32_t) prompt.size();
    const double t_start = now_us();

    // the longest common prefix stays in the KV cache; at least the last prompt token is evaluated
    int32_t n_common = 0;
    while (n_common < (int32_t) tokens_.size() && n_common + 1 < (int32_t) prompt.size() &&
           tokens_[n_common] == prompt[n_common]) {
        ++n_common;
    }
    // a proposer fed with features pairs the feature of each token with the token after it: the last
    // common token's pair holds the old next token, so it goes, whether or not this request drafts
    auto keep_for = [&](const proposer & p) { return p.needs_features() && n_common > 0 ? n_common - 1 : n_common; };
    int32_t n_kept_dft = 0;
    for (auto & entry : proposers_) {
        const int32_t kept = entry.second->reset(keep_for(*entry.second));
        if (entry.second.get() == dft) {
            n_kept_dft = kept;
        }
    }
    // with the budget from the curve, the drafter joins a request only where its ceiling clears the floor,
    // its catch-up over the prompt counted and the target's work for its features: the cached tokens it must
    // evaluate again where a request without the drafter left it behind, and the feature rows of the others.
    // Only the pairs the drafter's catch-up reads get features: from n_read on (its window over a long prompt).
    // A request without it pays for no features: its prefill and its decodes are plain decoding's
    const bool auto_budget = gp.spec.n_nodes_max == 0;
    const int32_t n_prompt = (int32_t) prompt.size();
    int32_t n_keep = n_common;
    int32_t n_read = n_prompt; // the first prompt position whose feature the drafter reads
    if (dft != nullptr && dft->needs_features()) {
        const int32_t n_more = n_prompt - n_kept_dft;
        const int32_t backlog = dft->backlog(n_more);
        const int32_t first_read = std::max(n_kept_dft, n_prompt - backlog);
        // cached tokens evaluated again whole; the other tokens of the chunks decoded with embeddings on cost their
        // rows' last layer
        const int32_t n_reeval = std::max(0, keep_for(*dft) - first_read);
        const int32_t keep = std::min(n_common, first_read);
        const int32_t n_rows = n_prompt - std::max(first_feature_row(keep, first_read), n_common);
        const double target_work = n_reeval + (double) n_rows / llama_model_n_layer(model_);
        if (!auto_budget || cost_.could_pay(dft->best_rate(), backlog, target_work)) {
            n_keep = keep;
            n_read = first_read;
        } else {
            dft = nullptr;
        }
    }
    const bool need_feat = dft != nullptr && dft->needs_features();
    st.drafter_joined = need_feat;
    llama_memory_t mem = llama_get_memory(ctx_);
    if (!llama_memory_seq_rm(mem, 0, n_keep, -1)) {
        throw error(format("the KV cache cannot drop positions %d.. to reuse the prompt's prefix", n_keep));
    }
    tokens_.resize(n_keep);

    std::vector<float> feats, logits_last; // [n_prompt - n_read, n_embd], [n_vocab]
    try {
        prefill(prompt, n_keep, n_read, true, st, feats, logits_last);
    } catch (...) {
        llama_memory_seq_rm(mem, 0, n_keep, -1);
        throw;
    }
    tokens_ = prompt;
    st.t_prefill_us = now_us() - t_start;

    const int32_t n_passes0 = dft != nullptr ? dft->n_passes() : 0;
    cost_.start_request();
    rng r(gp.sampling.seed);
    std::vector<llama_token> history = prompt; // every token so far, the root included
    llama_token id;
    if (greedy) {
        id = pick_greedy(logits_last.data(), n_vocab(), gp.sampling, history);
    } else {
        std::vector<token_prob> dist;
        dist_from_logits(logits_last.data(), n_vocab(), gp.sampling, history, dist);
        id = sample_dist(dist, r);
    }
    history.push_back(id);
    if (need_feat) {
        // pair i holds the token after position i: [n_kept_dft, n_read) without features, then [n_read, n_prompt)
        std::vector<llama_token> next(prompt.begin() + n_kept_dft + 1, prompt.end());
        next.push_back(id);
        dft->accept_unread(next.data(), n_read - n_kept_dft);
        dft->accept(feats.data(), next.data() + (n_read - n_kept_dft), n_prompt - n_read);
    }

    text_emitter em{gp.stop, {}, 0};
    bool done = false;
    // emits the tokens of one step; sets done and the finish reason when generation ends
    auto emit = [&](const std::vector<llama_token> & new_tokens) {
        std::vector<llama_token> shown;
        for (llama_token tok : new_tokens) {
            if (!gp.ignore_eos && is_eog(tok)) {
                done = true;
                res.finish_reason = "stop";
                break;
            }
            shown.push_back(tok);
            res.tokens.push_back(tok);
            if (em.push(token_to_piece(tok, false))) {
                done = true;
                res.finish_reason = "stop";
                break;
            }
            if (gp.max_tokens > 0 && (int32_t) res.tokens.size() >= gp.max_tokens) {
                done = true;
                res.finish_reason = "length";
                break;
            }
        }
        if (!done && (int32_t) tokens_.size() + 2 > n_ctx()) {
            done = true;
            res.finish_reason = "length";
        }
        const std::string text = em.take(done);
        if (cb && !cb(shown, text) && !done) {
            done = true;
            res.finish_reason = "cancelled";
        }
    };
    emit({id});

    tree t;
    tree_batch tb;
    std::vector<float> path_feats;
    std::vector<int32_t> head_slot;  // [n_nodes] row of each node in head_logits, -1: not computed
    std::vector<float> head_feat;    // [m, n_embd] features of one path-head call
    std::vector<float> head_logits;  // [rows computed, n_vocab] the path head's logits of this cycle
    // the largest tree of a cycle: the fixed budget, or in auto mode the curve's largest size
    const int32_t budget = !auto_budget ? gp.spec.n_nodes_max : cost_.n_max() > 0 ? cost_.n_max() : N_NODES_AUTO;
    // the prompt's catch-up weighs on the ceiling until the drafter first drafts in this request; after that,
    // what it has to catch up on is the request's own stretch without drafting, which the probes weigh
    bool dft_drafted = false;
    while (!done) {
        if (cancel_) {
            throw aborted("generation was cancelled");
        }
        const int32_t n_past = (int32_t) tokens_.size();
        tree_init(t, id);

        // ---- draft ----
        const double t0 = now_us();
        const int32_t n_nodes_max = std::min({budget, params_.n_batch, n_ctx() - n_past - 1});
        if (n_nodes_max > 1 && (dft != nullptr || ngram != nullptr)) {
            const bool drafted = dft != nullptr &&
                (!auto_budget || cost_.worth_drafting(dft->best_rate(), dft_drafted ? 0 : dft->backlog(0)));
            dft_drafted = dft_drafted || drafted;
            if (drafted) {
                dft->catch_up(n_nodes_max);
                const double t_cycle = now_us();
                dft->draft(history, auto_budget ? cost_.draft_budget(n_nodes_max) : n_nodes_max, gp.spec, gp.sampling, r, t);
                cost_.observe_draft(now_us() - t_cycle);
            }
            if (ngram != nullptr) {
                ngram->draft(history, n_nodes_max, gp.spec, gp.sampling, r, t);
            }
            if (auto_budget && drafted) {
                cost_.record_gain(t, ORIGIN_DRAFTER);
            }
            // each leaf is a sequence of the context
            tree_prune(t, auto_budget ? cost_.choose(t) : n_nodes_max, params_.n_seq_max);
            st.t_draft_us += now_us() - t0;
        }
        st.n_nodes_max = std::max(st.n_nodes_max, t.size());
        st.verify_units += cost_.cost_extrapolated(t.size());

        // ---- verify: the whole tree in one decode (with the path head: up to the final norm) ----
        const double t1 = now_us();
        const bool on_path = head_ != nullptr && t.size() > 1;
        tree_batch_build(tb, t, n_past, ctx_);
        llama_set_embeddings(ctx_, need_feat || on_path);
        skip_head_ = on_path;
        const int rc = llama_decode(ctx_, tb.batch);
        llama_synchronize(ctx_); // a GPU backend returns before it computes: the cost model needs the whole decode
        skip_head_ = false;
        if (rc != 0) {
            kv_commit(ctx_, 0, n_past - 1, 0); // drop whatever the failed decode left behind
            check_decode(rc, format("tree of %d nodes at n_past %d", t.size(), n_past));
        }
        const double t_verify = now_us() - t1;
        st.t_verify_us += t_verify;
        cost_.observe_decode(t.size(), t_verify);

        // ---- accept, commit, feed the proposer ----
        const double t2 = now_us();
        // the logits the walk reads: the decode's rows, or the path head's, computed as the walk
        // reaches each node together with the rows below it likely enough to be read too
        head_slot.assign(t.size(), -1);
        int32_t n_head_rows = 0;
        auto logits_of = [&](int32_t u) -> const float * {
            if (!on_path) {
                return llama_get_logits_ith(ctx_, tb.row_of[u]);
            }
            if (head_slot[u] < 0) {
                const std::vector<int32_t> rows = cost_.head_batch(t, u);
                const int32_t m = (int32_t) rows.size();
                head_feat.resize((size_t) m * n_embd_tgt);
                for (int32_t i = 0; i < m; ++i) {
                    const float * f = llama_get_embeddings_ith(ctx_, tb.row_of[rows[i]]);
                    std::copy(f, f + n_embd_tgt, head_feat.begin() + (size_t) i * n_embd_tgt);
                    head_slot[rows[i]] = n_head_rows + i;
                }
                head_logits.resize((size_t) (n_head_rows + m) * n_vocab());
                const double th = now_us();
                head_->logits(head_feat.data(), m, head_logits.data() + (size_t) n_head_rows * n_vocab());
                const double dt = now_us() - th;
                cost_.observe_head(m, dt);
                st.verify_units += cost_.head_cost(m);
                st.t_head_us += dt;
                n_head_rows += m;
            }
            return head_logits.data() + (size_t) head_slot[u] * n_vocab();
        };
        const walk_result walk = verify_tree(t, logits_of, n_vocab(), gp.sampling, history, r);
        st.n_head_rows += n_head_rows;
        const std::vector<int32_t> path = tree_path(t, walk.node);
        for (proposer * p : {dft, ngram}) {
            if (p != nullptr) {
                p->observe(t, path);
            }
        }
        for (int32_t u = 1; u < t.size(); ++u) {
            st.n_drafted_ngram += t.origin[u] == ORIGIN_NGRAM;
        }
        for (size_t i = 1; i < path.size(); ++i) {
            st.n_accepted_ngram += t.origin[path[i]] == ORIGIN_NGRAM;
        }
        if (need_feat) {
            path_feats.resize(path.size() * (size_t) n_embd_tgt);
            for (size_t i = 0; i < path.size(); ++i) {
                const float * f = llama_get_embeddings_ith(ctx_, tb.row_of[path[i]]);
                std::copy(f, f + n_embd_tgt, path_feats.begin() + i * n_embd_tgt);
            }
        }
        kv_commit(ctx_, tb.leaf_seq[walk.node], n_past, walk.n_accepted);
        std::vector<llama_token> new_tokens;
        for (size_t i = 0; i < path.size(); ++i) {
            tokens_.push_back(t.token[path[i]]);
            if (i > 0) {
                new_tokens.push_back(t.token[path[i]]);
                history.push_back(t.token[path[i]]);
            }
        }
        new_tokens.push_back(walk.next);
        history.push_back(walk.next);
        if (need_feat) {
            dft->accept(path_feats.data(), new_tokens.data(), (int32_t) new_tokens.size());
        }
        id = walk.next;
        st.n_cycles += 1;
        st.n_drafted += t.size() - 1;
        st.n_accepted += walk.n_accepted;
        st.t_sample_us += now_us() - t2;
        emit(new_tokens);
    }
    if (dft != nullptr) {
        st.n_draft_passes = dft->n_passes() - n_passes0;
    }
    res.text = em.text;
    st.n_generated = (int32_t) res.tokens.size();
    st.t_total_us = now_us() - t_start;
    return res;
}

} // namespace fe
