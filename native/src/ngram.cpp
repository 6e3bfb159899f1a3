// N-gram lookup over the committed context.
#include "falcon-edge/ngram.h"

#include <algorithm>

namespace fe {

// acceptance keys: matched length 1, 2-3, 4-7, 8+ x depth 1, 2, 3+ (few keys: each is learned online)
static constexpr int32_t N_MATCH_KEYS = 4;
static constexpr int32_t N_DEPTH_KEYS = 3;
// rates before any observation, by matched length: a longer match predicts its continuation better
// (short matches in chat text are accepted ~20% of the time, 8+ token matches in code ~90%)
static constexpr float PRIOR_RATE[N_MATCH_KEYS] = {0.25f, 0.4f, 0.6f, 0.8f};
// what the n-gram rates mean depends on the text at hand: a memory of about 200 verified trees
static constexpr double STATS_DECAY = 0.995;
// ... that is only the prior of the request's own trials, worth this many (acceptance.h)
static constexpr double REQUEST_WEIGHT = 8.0;

static int32_t match_class(int32_t n_match) {
    return n_match >= 8 ? 3 : (n_match >= 4 ? 2 : (n_match >= 2 ? 1 : 0));
}

static int32_t ngram_key(int32_t n_match, int32_t depth) {
    return match_class(n_match) * N_DEPTH_KEYS + std::min(depth, N_DEPTH_KEYS) - 1;
}

ngram_proposer::ngram_proposer() : stats_(N_MATCH_KEYS * N_DEPTH_KEYS, STATS_DECAY, REQUEST_WEIGHT) {}

std::vector<ngram_continuation> ngram_continuations(const std::vector<llama_token> & tokens, int32_t n_min,
                                                    int32_t n_max, int32_t n_branches, int32_t depth) {
    std::vector<ngram_continuation> out;
    const int32_t len = (int32_t) tokens.size();
    for (int32_t n = std::min(n_max, len - 1); n >= std::max(n_min, 1) && out.empty(); --n) {
        const llama_token * suffix = tokens.data() + len - n;
        for (int32_t i = len - n - 1; i >= 0 && (int32_t) out.size() < n_branches; --i) {
            if (!std::equal(suffix, suffix + n, tokens.data() + i)) {
                continue;
            }
            const int32_t start = i + n;
            const int32_t stop  = std::min(start + depth, len);
            const llama_token first = tokens[start];
            const bool seen = std::any_of(out.begin(), out.end(), [&](const auto & c) { return c.tokens[0] == first; });
            if (!seen) {
                out.push_back({n, std::vector<llama_token>(tokens.begin() + start, tokens.begin() + stop)});
            }
        }
    }
    return out;
}

void ngram_proposer::draft(const std::vector<llama_token> & tokens, int32_t n_nodes_max, const spec_params & sp,
                           const sampling_params & smp, rng & r, tree & out) {
    const auto conts = ngram_continuations(tokens, sp.ngram_min, sp.ngram_max, sp.ngram_branches, sp.depth_max);
    for (size_t b = 0; b < conts.size(); ++b) {
        int32_t node = 0;
        float value = 1.0f;
        for (size_t j = 0; j < conts[b].tokens.size(); ++j) {
            const llama_token id = conts[b].tokens[j];
            if (out.size() >= n_nodes_max && tree_child(out, node, id) < 0) {
                break;
            }
            const int32_t key = ngram_key(conts[b].n_match, out.depth[node] + 1);
            value *= stats_.rate(key, PRIOR_RATE[match_class(conts[b].n_match)]);
            node = tree_add(out, node, id, value, ORIGIN_NGRAM, key);
        }
    }
}

int32_t ngram_proposer::reset(int32_t n_keep) {
    stats_.start_request();
    return n_keep;
}

void ngram_proposer::observe(const tree & t, const std::vector<int32_t> & path) {
    stats_.observe(t, path, ORIGIN_NGRAM);
}

} // namespace fe
