// Hardware-aware tree size. The target's cost of verifying N nodes, c(N) relative to one token,
// is measured on the running device (engine::measure_verify_cost, cached per model/device/threads
// by Python); the tree budget is the N that maximizes expected tokens per unit of time:
//
//     speed(N) = (1 + s * E[accepted | N]) / (c(N) + d)      speed(1) = 1 (plain decoding)
//
// with E[accepted | N] the sum of the N-1 best node values of the drafted tree, s a running
// calibration of those values against what verification actually accepted, and d the measured
// drafting cost per cycle relative to one target token. A drafted tree is cut to its best N with d
// already paid (d = 0); whether to draft at all follows the running gain of speed(N) with d counted,
// and while it stays under 2% the engine decodes plainly and drafts only every 16th step to re-check.
#pragma once

#include "falcon-edge/tree.h"

#include <cstdint>
#include <vector>

namespace fe {

class cost_model {
public:
    // c[i] = cost of verifying i+1 nodes relative to one (c[0] = 1); empty = unknown
    void set_curve(const std::vector<double> & c) { curve_ = c; }
    const std::vector<double> & curve() const { return curve_; }
    int32_t n_max() const { return (int32_t) curve_.size(); }

    // largest tree worth drafting before anything is known (the drafter's own budget)
    int32_t draft_budget(int32_t n_nodes_max) const;

    // best node count for this already drafted tree; 1 = don't verify drafts. d (drafting cost relative
    // to one target token) feeds the running gain that worth_drafting reads
    // (also updates the running estimate of the gain over plain decoding used by worth_drafting)
    int32_t choose(const tree & t, double d);

    // whether drafting is expected to pay at all (probes every so often while it does not)
    bool worth_drafting(double d);

    // after each verification: the predicted accepted count of the verified tree and the real one
    void observe(double predicted, int32_t accepted);

    double calibration() const;

private:
    double expected_speed(const std::vector<float> & sorted_values, int32_t n, double d) const;

    std::vector<double> curve_;
    double sum_predicted_ = 0.0;
    double sum_accepted_  = 0.0;
    double gain_          = 1.0; // running gain of the best tree over plain decoding; optimistic until measured
    int32_t n_skipped_    = 0;
};

} // namespace fe
