// Continuous batching of greedy answers: prompts are evaluated one decode each as slots free up;
// every step decodes the last token of every answering slot in one batch.
#include "falcon-edge/self-distill.h"

#include "falcon-edge/batch-owner.h"
#include "falcon-edge/errors.h"
#include "falcon-edge/sampling.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <thread>

namespace fe {

namespace {

enum class slot_state { idle, answer, last };

struct slot {
    slot_state state = slot_state::idle;
    int32_t i_prompt = -1;   // index into prompts
    int32_t n_answer = 0;    // answer tokens sampled so far
    distilled_sequence seq;
};

struct context_deleter {
    void operator()(llama_context * ctx) const { llama_free(ctx); }
};

void add_row(llama_batch & b, llama_token id, int32_t pos, int32_t seq_id) {
    b.token[b.n_tokens] = id;
    b.pos[b.n_tokens] = pos;
    b.n_seq_id[b.n_tokens] = 1;
    b.seq_id[b.n_tokens][0] = seq_id;
    b.logits[b.n_tokens] = 1; // every row: its feature is training data
    ++b.n_tokens;
}

void append_features(llama_context * ctx, int32_t row0, int32_t n_rows, int32_t n_embd, distilled_sequence & ds) {
    for (int32_t r = row0; r < row0 + n_rows; ++r) {
        const float * f = llama_get_embeddings_ith(ctx, r); // [n_embd]
        ds.features.insert(ds.features.end(), f, f + n_embd);
    }
}

} // namespace

void self_distill(llama_model * model, const std::vector<std::vector<llama_token>> & prompts,
                  const self_distill_params & params, const std::atomic<bool> & cancel, const distilled_callback & on_done) {
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    const int32_t n_embd = llama_model_n_embd(model);
    if (params.max_tokens < 1 || params.n_parallel < 1 || params.n_parallel > (int32_t) llama_max_parallel_sequences()) {
        throw std::invalid_argument(format("self-distillation needs max_tokens >= 1 and n_parallel in [1, %d], got %d and %d",
                                           (int) llama_max_parallel_sequences(), params.max_tokens, params.n_parallel));
    }
    int32_t longest = 0;
    for (size_t s = 0; s < prompts.size(); ++s) {
        if (prompts[s].empty()) {
            throw std::invalid_argument(format("prompt %d is empty", (int) s));
        }
        for (llama_token id : prompts[s]) {
            if (id < 0 || id >= n_vocab) {
                throw std::invalid_argument(format("prompt %d: token %d is outside the vocabulary [0, %d)", (int) s, id, n_vocab));
            }
        }
        longest = std::max(longest, (int32_t) prompts[s].size());
    }
    if (prompts.empty()) {
        return;
    }

    const int32_t n_parallel = std::min<int32_t>(params.n_parallel, (int32_t) prompts.size());
    const int32_t n_batch = std::max<int32_t>(512, n_parallel);
    llama_context_params cp = llama_context_default_params();
    cp.n_seq_max = n_parallel;
    cp.kv_unified = false;  // one KV stream per sequence: attention reads only its own cells
    cp.n_ctx = (uint32_t) n_parallel * (uint32_t) (longest + params.max_tokens + 8);
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.embeddings = true;
    cp.no_perf = true;
    const int32_t n_threads = params.n_threads > 0 ? params.n_threads : (int32_t) std::max(1u, std::thread::hardware_concurrency());
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.abort_callback = [](void * data) { return static_cast<const std::atomic<bool> *>(data)->load(); };
    cp.abort_callback_data = const_cast<std::atomic<bool> *>(&cancel);
    std::unique_ptr<llama_context, context_deleter> ctx(llama_init_from_model(model, cp));
    if (!ctx) {
        throw model_error(format("failed to create a self-distillation context of %u tokens for %d sequences", cp.n_ctx, n_parallel));
    }
    llama_memory_t mem = llama_get_memory(ctx.get());

    std::vector<slot> slots(n_parallel);
    int32_t next = 0;
    size_t n_done = 0;
    batch_owner bo(n_batch);
    llama_batch & b = bo.b;
    // samples the next answer token of slot k from batch row `row` and moves it on
    auto advance = [&](int32_t k, int32_t row) {
        slot & sl = slots[k];
        const llama_token id = argmax(llama_get_logits_ith(ctx.get(), row), n_vocab);
        sl.seq.tokens.push_back(id);
        ++sl.n_answer;
        sl.seq.finished = llama_vocab_is_eog(vocab, id);
        sl.state = sl.seq.finished || sl.n_answer >= params.max_tokens ? slot_state::last : slot_state::answer;
    };
    while (n_done < prompts.size()) {
        if (cancel.load()) {
            throw aborted("self-distillation cancelled");
        }
        // ---- idle slots take the next prompts, each evaluated alone ----
        for (int32_t k = 0; k < n_parallel && next < (int32_t) prompts.size(); ++k) {
            slot & sl = slots[k];
            if (sl.state != slot_state::idle) {
                continue;
            }
            const auto & p = prompts[next];
            sl.i_prompt = next++;
            sl.n_answer = 0;
            sl.seq = distilled_sequence();
            sl.seq.tokens = p;
            sl.seq.n_prompt = (int32_t) p.size();
            sl.seq.features.reserve((size_t) (p.size() + params.max_tokens) * n_embd);
            for (int32_t start = 0; start < (int32_t) p.size(); start += n_batch) {
                const int32_t cnt = std::min<int32_t>(n_batch, (int32_t) p.size() - start);
                b.n_tokens = 0;
                for (int32_t i = 0; i < cnt; ++i) {
                    add_row(b, p[start + i], start + i, k);
                }
                check_decode(llama_decode(ctx.get(), b), format("self-distillation prompt %d", sl.i_prompt));
                append_features(ctx.get(), 0, cnt, n_embd, sl.seq);
            }
            advance(k, b.n_tokens - 1);
        }
        // ---- one token of every answering slot ----
        b.n_tokens = 0;
        std::vector<int32_t> row_of(n_parallel, -1);
        for (int32_t k = 0; k < n_parallel; ++k) {
            const slot & sl = slots[k];
            if (sl.state == slot_state::answer || sl.state == slot_state::last) {
                row_of[k] = b.n_tokens;
                add_row(b, sl.seq.tokens.back(), (int32_t) sl.seq.tokens.size() - 1, k);
            }
        }
        if (b.n_tokens == 0) {
            continue;
        }
        check_decode(llama_decode(ctx.get(), b), format("self-distillation batch of %d rows", b.n_tokens));
        for (int32_t k = 0; k < n_parallel; ++k) {
            if (row_of[k] < 0) {
                continue;
            }
            slot & sl = slots[k];
            append_features(ctx.get(), row_of[k], 1, n_embd, sl.seq);
            if (sl.state == slot_state::answer) {
                advance(k, row_of[k]);
                continue;
            }
            sl.state = slot_state::idle;
            ++n_done;
            llama_memory_seq_rm(mem, k, -1, -1);
            if (!on_done(sl.i_prompt, std::move(sl.seq))) {
                return;
            }
        }
    }
}

} // namespace fe
