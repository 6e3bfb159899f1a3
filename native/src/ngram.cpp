// N-gram lookup over the committed context.
#include "falcon-edge/ngram.h"

#include <algorithm>
#include <cmath>

namespace fe {

std::vector<std::vector<llama_token>> ngram_continuations(const std::vector<llama_token> & tokens, int32_t n_min,
                                                          int32_t n_max, int32_t n_branches, int32_t depth) {
    std::vector<std::vector<llama_token>> out;
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
            const bool seen = std::any_of(out.begin(), out.end(), [&](const auto & c) { return c[0] == first; });
            if (!seen) {
                out.emplace_back(tokens.begin() + start, tokens.begin() + stop);
            }
        }
    }
    return out;
}

void ngram_proposer::draft(const std::vector<llama_token> & tokens, int32_t n_nodes_max, const spec_params & sp,
                           const sampling_params & smp, rng & r, tree & out) {
    const auto conts = ngram_continuations(tokens, sp.ngram_min, sp.ngram_max, sp.ngram_branches, sp.depth_max);
    // the most recent continuation is the most likely; later branches are discounted
    for (size_t b = 0; b < conts.size(); ++b) {
        int32_t node = 0;
        float value = 1.0f;
        const float acc = 0.6f / (float) (b + 1);
        for (llama_token id : conts[b]) {
            if (out.size() >= n_nodes_max && tree_child(out, node, id) < 0) {
                break;
            }
            value *= acc;
            node = tree_add(out, node, id, value);
        }
    }
}

} // namespace fe
