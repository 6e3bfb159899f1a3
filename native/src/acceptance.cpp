// Acceptance counts per proposer key and the calibrated rates read from them.
#include "falcon-edge/acceptance.h"

#include <algorithm>
#include <cmath>

namespace fe {

static constexpr double PRIOR_WEIGHT = 4.0; // trials the prior counts for
// optimism in the face of uncertainty: rates are read as mean + UCB_Z standard errors, so a key that
// has seen few trials gets verified (and learned) instead of being ruled out by a cautious prior
static constexpr double UCB_Z = 0.5;

float acceptance_stats::rate(int32_t key, float prior) const {
    return estimate(key, prior, UCB_Z);
}

float acceptance_stats::mean(int32_t key, float prior) const {
    return estimate(key, prior, 0.0);
}

float acceptance_stats::estimate(int32_t key, float prior, double z) const {
    if (key < 0 || key >= n_keys()) {
        return prior;
    }
    const double n = n_trials_[key] + PRIOR_WEIGHT;
    const double mean = (n_success_[key] + PRIOR_WEIGHT * prior) / n;
    const double long_run = std::min(1.0, mean + z * std::sqrt(mean * (1.0 - mean) / n));
    if (request_weight_ <= 0.0) {
        return (float) long_run;
    }
    return (float) ((n_success_request_[key] + request_weight_ * long_run) / (n_trials_request_[key] + request_weight_));
}

void acceptance_stats::observe(const tree & t, const std::vector<int32_t> & path, uint8_t origin) {
    std::vector<char> on_path(t.size(), 0);
    for (int32_t u : path) {
        on_path[u] = 1;
    }
    for (int32_t key = 0; key < n_keys(); ++key) {
        n_trials_[key]  *= decay_;
        n_success_[key] *= decay_;
    }
    for (int32_t u = 1; u < t.size(); ++u) {
        const int32_t key = t.bucket[u];
        if (t.origin[u] != origin || !on_path[t.parent[u]] || key < 0 || key >= n_keys()) {
            continue;
        }
        n_trials_[key]  += 1.0;
        n_success_[key] += on_path[u] ? 1.0 : 0.0;
        n_trials_request_[key]  += 1.0;
        n_success_request_[key] += on_path[u] ? 1.0 : 0.0;
    }
}

void acceptance_stats::start_request() {
    std::fill(n_trials_request_.begin(), n_trials_request_.end(), 0.0);
    std::fill(n_success_request_.begin(), n_success_request_.end(), 0.0);
}

} // namespace fe
