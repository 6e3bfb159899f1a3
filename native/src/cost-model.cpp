// Tree budget from the measured verify-cost curve and calibrated node values.
#include "falcon-edge/cost-model.h"

#include <algorithm>
#include <functional>

namespace fe {

static constexpr int32_t N_PROBE_FIRST = 16;   // cycles between probes while drafting does not pay ...
static constexpr int32_t N_PROBE_MAX   = 256;  // ... doubling after each probe that found no gain
static constexpr int32_t N_PROBE_CYCLES = 4;   // cycles a probe drafts on, judged by their mean gain
static constexpr double  MIN_GAIN      = 0.02; // expected speed-up below which drafting stops (2%)
// the ceiling's floor. The ceiling (every node as likely as the best key) is a bound that real text meets only in
// stretches: on math, where the drafter carries most accepted tokens, decoding realized about a third of its gain at
// best over every host and format benchmarked (docs/benchmarks.md, session 28), and nothing where it promised under
// 25% (Q4_K_M on an AMD EPYC: ceilings of 1.05-1.16, the drafter adding 2-6% of the accepted tokens, its probes and
// the target's features for it leaving requests 1-2% slower than plain decoding). Below it the drafter stays out
static constexpr double  MIN_CEILING_GAIN = 0.25;
static constexpr double  GAIN_DECAY    = 0.75; // weight of the past in the running gain (~4 cycles)
static constexpr double  PRIOR_WEIGHT  = 4.0;  // decodes of a size the measured curve counts for
static constexpr double  SEEN_MAX      = 16.0; // the weight of observations is capped: a moving average
static constexpr double  UNIT_DECAY    = 0.9;  // weight of the past in the one-node decode time, the
                                               // time of one token's verification and the drafting time

void cost_model::set_curve(const std::vector<double> & c) {
    curve_ = c;
    seen_.assign(c.size(), 0.0);
    n_seen_.assign(c.size(), 0.0);
    unit_us_ = 0.0;
    token_us_ = 0.0;
    draft_us_ = 0.0;
    n_chosen_ = 0;
}

static double blend(double past, double now) {
    return past > 0.0 ? UNIT_DECAY * past + (1.0 - UNIT_DECAY) * now : now;
}

void cost_model::observe_decode(int32_t n, double us) {
    if (n < 1 || !(us > 0.0)) {
        return;
    }
    observe_curve(n, us);
    token_us_ = blend(token_us_, us / cost_extrapolated(n));
}

void cost_model::observe_draft(double us) {
    if (us > 0.0) {
        draft_us_ = blend(draft_us_, us);
    }
}

double cost_model::draft_cost() const {
    return token_us_ > 0.0 && draft_us_ > 0.0 ? draft_us_ / token_us_ : draft_measured_;
}

void cost_model::observe_curve(int32_t n, double us) {
    if (n > n_max()) {
        return;
    }
    if (n == 1) {
        unit_us_ = blend(unit_us_, us);
        return;
    }
    if (unit_us_ <= 0.0) {
        return; // no one-node decode seen yet to relate this one to
    }
    const double ratio = us / unit_us_;
    n_seen_[n - 1] = std::min(n_seen_[n - 1] + 1.0, SEEN_MAX);
    seen_[n - 1] += (ratio - seen_[n - 1]) / n_seen_[n - 1];
}

double cost_model::cost(int32_t n) const {
    const double w = n_seen_[n - 1];
    return (PRIOR_WEIGHT * curve_[n - 1] + w * seen_[n - 1]) / (PRIOR_WEIGHT + w);
}

double cost_model::cost_extrapolated(int32_t n) const {
    if (n_max() == 0) {
        return (double) n;
    }
    return n <= n_max() ? cost(n) : cost(n_max()) * n / n_max();
}

void cost_model::set_head_cost(double row, double extra) {
    head_row_ = std::max(0.0, row);
    head_extra_ = std::max(0.0, extra);
}

void cost_model::observe_head(int32_t m, double us) {
    if (m < 1 || !(us > 0.0) || unit_us_ <= 0.0) {
        return;
    }
    const double r = us / unit_us_;
    if (m == 1) {
        head_row_ = blend(head_row_, r);
    } else {
        head_extra_ = blend(head_extra_, std::max(0.0, (r - head_row_) / (m - 1)));
    }
}

double cost_model::head_cost(int32_t m) const {
    return m > 0 ? head_row_ + (m - 1) * head_extra_ : 0.0;
}

std::vector<int32_t> cost_model::head_batch(const tree & t, int32_t u) const {
    const double ratio = head_row_ > 0.0 ? head_extra_ / head_row_ : 0.0;
    std::vector<int32_t> rows = {u};
    // parents come before their children: one pass marks the subtree of u
    std::vector<char> below(t.size(), 0);
    below[u] = 1;
    for (int32_t w = u + 1; w < t.size(); ++w) {
        below[w] = t.parent[w] >= 0 && below[t.parent[w]];
        if (below[w] && t.value[w] >= ratio * t.value[u]) {
            rows.push_back(w);
        }
    }
    return rows;
}

int32_t cost_model::draft_budget(int32_t n_nodes_max) const {
    if (curve_.empty() || n_probe_left_ > 0 || n_chosen_ == 0) {
        return n_nodes_max;
    }
    return std::clamp(2 * n_chosen_, 2, n_nodes_max);
}

double cost_model::best_speed(const std::vector<float> & values, double d, int32_t & best_n) const {
    best_n = 1;
    double best = 1.0 / (1.0 + d);
    double acc = 0.0;
    double head = head_row_; // the root's row
    for (int32_t n = 2; n <= std::min((int32_t) values.size() + 1, n_max()); ++n) {
        acc += values[n - 2];
        head += std::min(head_extra_, values[n - 2] * head_row_);
        const double s = (1.0 + acc) / (cost(n) + head + d);
        if (s > best) {
            best = s;
            best_n = n;
        }
    }
    return best;
}

static std::vector<float> sorted_values(const tree & t, uint8_t excluded) {
    std::vector<float> values;
    for (int32_t u = 1; u < t.size(); ++u) {
        if (t.origin[u] != excluded) {
            values.push_back(t.value[u]);
        }
    }
    std::sort(values.begin(), values.end(), std::greater<float>());
    return values;
}

int32_t cost_model::choose(const tree & t) {
    if (curve_.empty()) {
        return t.size();
    }
    best_speed(sorted_values(t, ORIGIN_ROOT), 0.0, n_chosen_);
    return n_chosen_;
}

void cost_model::record_gain(const tree & t, uint8_t costly) {
    if (curve_.empty()) {
        return;
    }
    const double d = draft_cost();
    int32_t n = 1;
    // "without" keeps the other proposers' nodes even where they hang below a costly node (an
    // n-gram chain merged into a more valuable drafter node): the gain is then underestimated
    const double with    = best_speed(sorted_values(t, ORIGIN_ROOT), d, n);
    const double without = best_speed(sorted_values(t, costly), 0.0, n);
    const double g = with / without - 1.0;
    if (n_probe_left_ == 0) {
        gain_ = GAIN_DECAY * gain_ + (1.0 - GAIN_DECAY) * g;
        return;
    }
    // a probe's mean gain replaces the running one: it is what drafting pays here and now
    probe_gain_ += g / N_PROBE_CYCLES;
    if (--n_probe_left_ == 0) {
        gain_ = probe_gain_;
        probe_every_ = gain_ > MIN_GAIN ? N_PROBE_FIRST : std::clamp(2 * probe_every_, N_PROBE_FIRST, N_PROBE_MAX);
    }
}

void cost_model::start_probe() {
    n_probe_left_ = N_PROBE_CYCLES;
    probe_gain_ = 0.0;
    n_skipped_ = 0;
}

void cost_model::start_request() {
    start_probe();
}

double cost_model::ceiling(float best_rate, int32_t backlog, double target_work) const {
    std::vector<float> chain(std::max(0, n_max() - 1));
    float v = 1.0f;
    for (float & value : chain) {
        value = v *= best_rate;
    }
    int32_t n = 1;
    const double once = backlog * pair_cost_ + target_work * cost(n_max()) / n_max();
    return best_speed(chain, draft_cost() + once / N_PROBE_FIRST, n);
}

bool cost_model::could_pay(float best_rate, int32_t backlog, double target_work) const {
    return curve_.empty() || ceiling(best_rate, backlog, target_work) > 1.0 + MIN_CEILING_GAIN;
}

bool cost_model::worth_drafting(float best_rate, int32_t backlog) {
    if (curve_.empty()) {
        return true;
    }
    if (!could_pay(best_rate, backlog, 0.0)) {
        n_probe_left_ = 0; // no probe could find a gain the best case does not hold
        return false;
    }
    if (n_probe_left_ > 0) {
        return true;
    }
    if (gain_ > MIN_GAIN) {
        probe_every_ = N_PROBE_FIRST;
        return true;
    }
    if (++n_skipped_ >= probe_every_) {
        start_probe();
        return true;
    }
    return false;
}

} // namespace fe
