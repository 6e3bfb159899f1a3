// The generation engine: one target model, one verification context, optional proposers, and the
// whole per-token loop (prefill -> draft -> tree batch -> llama_decode -> verify -> commit -> emit)
// in C++. Python calls generate() once per request; it calls back once per emitted chunk.
#pragma once

#include "falcon-edge/cost-model.h"
#include "falcon-edge/params.h"
#include "falcon-edge/proposer.h"
#include "falcon-edge/self-distill.h"
#include "falcon-edge/stats.h"
#include "falcon-edge/target-head.h"

#include "llama.h"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace fe {

// called after each verification step with the newly emitted tokens and the text that is safe
// to show (held back while it could still become a stop string); return false to cancel
using chunk_callback = std::function<bool(const std::vector<llama_token> & tokens, const std::string & text)>;

struct gen_result {
    std::vector<llama_token> tokens;        // generated tokens (EOG excluded)
    std::string              text;          // their text, cut before a stop string
    std::string              finish_reason; // "stop" (EOG or stop string) | "length" (max_tokens or context)
    gen_stats                stats;
};

class engine {
public:
    // loads the target GGUF and creates the verification context (kv_unified, n_seq_max leaves);
    // throws fe::model_error when the file cannot be loaded, std::invalid_argument on bad params
    engine(const std::string & path_model, const engine_params & params);
    ~engine();
    engine(const engine &) = delete;
    engine & operator=(const engine &) = delete;

    // ---- vocabulary and metadata ----
    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string token_to_piece(llama_token id, bool special) const;
    std::string meta(const std::string & key) const;   // "" when absent
    int32_t n_vocab() const;
    int32_t n_embd() const;
    int32_t n_ctx() const;
    llama_token token_bos() const;
    llama_token token_eos() const;
    bool is_eog(llama_token id) const;
    const llama_model * model() const { return model_; }
    std::string path() const { return path_; }

    // ---- speculation ----
    // attaches a proposer for spec mode `mode` ("ngram" is built in; "falcon" once a drafter is loaded)
    void set_proposer(const std::string & mode, std::unique_ptr<proposer> p);
    bool has_proposer(const std::string & mode) const;
    // c[i] = measured cost of verifying i+1 nodes relative to one
    void set_verify_cost(const std::vector<double> & c);
    std::vector<double> verify_cost() const;
    // the curve as the engine currently estimates it: the measured one refined by the decodes seen
    std::vector<double> verify_cost_estimate() const;
    // times (microseconds) of one decode of N = 1 .. n_max nodes, each an output, after a context of
    // n_depth tokens: the median one-node time times the median of n_reps ratios of N nodes to one
    // node timed just before (each rep visiting the sizes from another start; a size cheaper than
    // the one below it is timed n_reps more times, and that one too); clears the KV cache
    std::vector<double> measure_verify_cost(int32_t n_max, int32_t n_reps, int32_t n_depth);
    // whether trees get their logits from the path head (target-head.h): a CPU target whose head
    // reproduced the decode's logits bit for bit when the engine was created, and path_head set
    bool path_head() const { return head_ != nullptr; }
    // the path head's cost relative to one plain step: one call of one row, each further row of a call
    void set_head_cost(double row, double extra);
    std::pair<double, double> head_cost() const;
    // times (microseconds) of path-head calls: one row, and each further row of a call of n_rows
    // (medians of n_reps); (0, 0) without the path head
    std::pair<double, double> measure_head_cost(int32_t n_rows, int32_t n_reps);
    // times (microseconds) of the Falcon drafter drafting one cycle's tree of up to n_nodes_max nodes with `sp`
    // below tokens.back(), the pairs of the tokens before it committed with the target's features, of one plain
    // step after them (a one-node decode with its logits), both medians of n_reps, and of one pair of the drafter's
    // catch-up over those tokens. Clears the KV cache and the proposers' state; the calibration is untouched.
    // Throws std::invalid_argument without a drafter or with bad sizes
    std::tuple<double, double, double> measure_draft_cost(const std::vector<llama_token> & tokens, const spec_params & sp,
                                                          int32_t n_nodes_max, int32_t n_reps);
    // the drafter's costs relative to one plain step, measured before this process drafted: a cycle's and a
    // catch-up pair's (cost_model::set_draft_cost); draft_cost() is the running estimate of a cycle's
    void set_draft_cost(double d, double pair);
    double draft_cost() const;

    // ---- generation ----
    // Runs one request. The KV cache keeps the longest common prefix with the previous request.
    // Throws std::invalid_argument (bad params, empty prompt), fe::context_full (prompt does not fit),
    // fe::aborted (cancelled: the engine stays usable).
    gen_result generate(const std::vector<llama_token> & prompt, const generate_params & gp, const chunk_callback & cb);

    // forgets the KV cache and every proposer's state
    void reset();
    // requests cancellation of the running generate() from any thread
    void cancel() { cancel_ = true; }
    // ---- features (drafter training) ----
    // clears the cache, evaluates `tokens` and returns the target's post-norm hidden state (the
    // LM-head input) at every position [n_tokens * n_embd]; the cache then holds `tokens`
    std::vector<float> features(const std::vector<llama_token> & tokens);
    // the target's greedy answers to `prompts` with the features of every token, decoded in
    // parallel in a context of its own (the cache of generate() is untouched), each handed to
    // `on_done` as it finishes (self-distill.h); cancel() stops it
    void self_distill(const std::vector<std::vector<llama_token>> & prompts, const self_distill_params & params,
                      const distilled_callback & on_done);

    // ---- probes for tests (exactness of tree verification and of the KV cache) ----
    // clears the cache and evaluates `tokens` into seq 0 (no logits kept)
    void prefill_only(const std::vector<llama_token> & tokens);
    // decodes a tree (parents[i] < i, -1 for the root) on top of the cached tokens and returns every
    // node's logits [n_nodes * n_vocab], from the decode or (path_head) from the path head over the
    // decode's features; the cache is left as it was
    std::vector<float> tree_logits(const std::vector<llama_token> & tokens, const std::vector<int32_t> & parents,
                                   bool path_head);

    // tokens whose KV entries are cached (the committed context of the last request)
    std::vector<llama_token> cached_tokens() const;

    // the running decode stops at the final norm (read by the context's eval callback)
    bool skips_head() const { return skip_head_; }

private:
    // evaluates prompt[n_keep:] into the KV cache; fills feats [n - n_read, n_embd] with the features of
    // positions [n_read, n) (n_read >= n_keep; n: none), and logits [n_vocab] with the last token's when need_logits
    void prefill(const std::vector<llama_token> & prompt, int32_t n_keep, int32_t n_read, bool need_logits, gen_stats & st,
                 std::vector<float> & feats, std::vector<float> & logits);
    // the first position prefill(prompt, n_keep, n_read, ...) decodes with embeddings on (n_read < prompt size), every
    // token from there on running the target's last layer: the start of its n_batch chunk (from n_keep) holding n_read
    int32_t first_feature_row(int32_t n_keep, int32_t n_read) const;
    proposer * proposer_for(const std::string & mode) const;
    // maps the target's LM head and keeps it when its logits of one decoded token equal the decode's
    void init_path_head(int32_t n_threads);
    // clears the cache and prefills `tokens`; returns their features when need_feat
    std::vector<float> evaluate(const std::vector<llama_token> & tokens, bool need_feat);
    // frees proposers, path head, context and model (destructor, and a constructor that throws late)
    void release();

    std::string path_;
    engine_params params_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    const llama_vocab * vocab_ = nullptr;

    std::vector<llama_token> tokens_; // tokens in seq 0 of the KV cache, positions 0 .. n-1
    std::vector<std::pair<std::string, std::unique_ptr<proposer>>> proposers_;
    cost_model cost_;
    mutable std::mutex mutex_;        // one generate() at a time; readers of its state take it too
    std::atomic<bool> cancel_{false};
    // the target runs on the CPU alone: a decode can stop at the final norm (one graph split)
    bool head_skippable_ = false;
    // the running decode stops after the final norm: features without the LM head (prefill, trees
    // with the path head)
    bool skip_head_ = false;
    std::unique_ptr<target_head> head_; // the path head; null: logits come from the decode
};

} // namespace fe
