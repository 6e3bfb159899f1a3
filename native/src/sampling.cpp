// Sampling chain: penalties, top-k, top-p, min-p, temperature (llama.cpp's order and semantics).
#include "falcon-edge/sampling.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace fe {

llama_token argmax(const float * logits, int32_t n_vocab) {
    int32_t best = 0;
    for (int32_t i = 1; i < n_vocab; ++i) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

// llama.cpp's repeat penalty: each distinct token of the last n is pushed away once
static void apply_repeat_penalty(std::vector<float> & logits, const sampling_params & sp,
                                 const std::vector<llama_token> & history) {
    const int32_t n_hist = (int32_t) history.size();
    const int32_t n_look = sp.repeat_last_n < 0 ? n_hist : std::min(sp.repeat_last_n, n_hist);
    std::unordered_set<llama_token> seen(history.end() - n_look, history.end());
    for (llama_token id : seen) {
        if (id < 0 || id >= (llama_token) logits.size()) {
            continue;
        }
        float & l = logits[id];
        l = l > 0.0f ? l / sp.repeat_penalty : l * sp.repeat_penalty;
    }
}

llama_token pick_greedy(const float * logits, int32_t n_vocab, const sampling_params & sp,
                        const std::vector<llama_token> & history) {
    if (sp.repeat_penalty == 1.0f) {
        return argmax(logits, n_vocab);
    }
    std::vector<float> l(logits, logits + n_vocab);
    apply_repeat_penalty(l, sp, history);
    return argmax(l.data(), n_vocab);
}

void dist_from_logits(const float * logits, int32_t n_vocab, const sampling_params & sp,
                      const std::vector<llama_token> & history, std::vector<token_prob> & out) {
    std::vector<float> l(logits, logits + n_vocab);
    if (sp.repeat_penalty != 1.0f) {
        apply_repeat_penalty(l, sp, history);
    }

    // candidates sorted by logit, cut to top-k (llama.cpp: k <= 0 keeps all)
    const int32_t k = sp.top_k > 0 ? std::min(sp.top_k, n_vocab) : n_vocab;
    std::vector<int32_t> ids(n_vocab);
    for (int32_t i = 0; i < n_vocab; ++i) {
        ids[i] = i;
    }
    auto by_logit = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
    ids.resize(k);

    // softmax over the candidates, used by top-p and min-p
    const float l_max = l[ids[0]];
    std::vector<double> p(k);
    double sum = 0.0;
    for (int32_t i = 0; i < k; ++i) {
        p[i] = std::exp((double) l[ids[i]] - l_max);
        sum += p[i];
    }
    int32_t n_keep = k;
    if (sp.top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < k; ++i) {
            cum += p[i] / sum;
            if (cum >= sp.top_p) {
                n_keep = i + 1;
                break;
            }
        }
    }
    if (sp.min_p > 0.0f) {
        // tokens whose probability is below min_p times the largest one are dropped
        const float l_min = l_max + std::log(sp.min_p);
        int32_t n_min = 1;
        while (n_min < n_keep && l[ids[n_min]] >= l_min) {
            ++n_min;
        }
        n_keep = n_min;
    }

    // temperature, then the final softmax
    out.resize(n_keep);
    double z = 0.0;
    for (int32_t i = 0; i < n_keep; ++i) {
        const double e = std::exp(((double) l[ids[i]] - l_max) / sp.temperature);
        out[i] = {ids[i], (float) e};
        z += e;
    }
    for (auto & tp : out) {
        tp.p = (float) (tp.p / z);
    }
}

llama_token sample_dist(const std::vector<token_prob> & dist, rng & r) {
    double total = 0.0;
    for (const auto & tp : dist) {
        total += tp.p;
    }
    double u = r.uniform() * total;
    for (const auto & tp : dist) {
        u -= tp.p;
        if (u < 0.0) {
            return tp.id;
        }
    }
    return dist.back().id;
}

} // namespace fe
