// Tree budget from the measured verify-cost curve and running acceptance calibration.
#include "falcon-edge/cost-model.h"

#include <algorithm>
#include <functional>

namespace fe {

static constexpr int32_t N_PROBE_EVERY = 16;   // cycles between probes while drafting does not pay
static constexpr double  MIN_GAIN      = 0.02; // expected speed-up below which drafting stops (2%)
static constexpr double  GAIN_DECAY    = 0.5;  // weight of the past in the running gain

double cost_model::calibration() const {
    // shrinks toward 1 while little has been observed
    return (sum_accepted_ + 2.0) / (sum_predicted_ + 2.0);
}

int32_t cost_model::draft_budget(int32_t n_nodes_max) const {
    if (curve_.empty()) {
        return n_nodes_max;
    }
    return std::min(n_nodes_max, n_max());
}

double cost_model::expected_speed(const std::vector<float> & sorted_values, int32_t n, double d) const {
    double acc = 0.0;
    for (int32_t i = 0; i < n - 1 && i < (int32_t) sorted_values.size(); ++i) {
        acc += sorted_values[i];
    }
    return (1.0 + calibration() * acc) / (curve_[n - 1] + d);
}

int32_t cost_model::choose(const tree & t, double d) {
    if (curve_.empty()) {
        return t.size();
    }
    std::vector<float> values(t.value.begin() + 1, t.value.end());
    std::sort(values.begin(), values.end(), std::greater<float>());
    // the size is chosen with this cycle's drafting cost already paid; whether drafting pays at all
    // (the running gain) counts it
    int32_t best_n = 1;
    double best = 1.0;      // plain decoding: one token per target step
    double best_paid = 1.0; // the same comparison with the drafting cost included
    for (int32_t n = 2; n <= std::min(t.size(), n_max()); ++n) {
        const double s = expected_speed(values, n, 0.0);
        if (s > best) {
            best = s;
            best_n = n;
        }
        best_paid = std::max(best_paid, expected_speed(values, n, d));
    }
    gain_ = GAIN_DECAY * gain_ + (1.0 - GAIN_DECAY) * (best_paid - 1.0);
    return best_n;
}

bool cost_model::worth_drafting(double d) {
    if (gain_ > MIN_GAIN || curve_.empty()) {
        return true;
    }
    if (++n_skipped_ >= N_PROBE_EVERY) {
        n_skipped_ = 0;
        return true;
    }
    return false;
}

void cost_model::observe(double predicted, int32_t accepted) {
    sum_predicted_ += predicted;
    sum_accepted_  += accepted;
}

} // namespace fe
