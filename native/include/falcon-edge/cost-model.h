// Hardware-aware tree size. The target's cost of verifying N nodes, c(N) relative to one token,
// is measured on the running device (engine::measure_verify_cost, cached per model/device/threads
// by Python) and refined online by the decodes of every generation (observe_decode: the measured
// curve is a prior worth PRIOR_WEIGHT decodes of each size), so a curve measured under other load,
// or a context longer than the probe's, corrects itself. The tree budget is the N that maximizes
// expected tokens per unit of time:
//
//     speed(N) = (1 + E[accepted | N]) / (c(N) + head(N) + d)      speed(1) = 1 (plain decoding)
//
// with E[accepted | N] the sum of the N-1 best node values of the drafted tree (calibrated
// acceptance probabilities: acceptance.h) and d the drafting cost of the cycle relative to one
// target token. head(N) is the expected cost of the logits the acceptance walk reads when the path
// head computes them outside the decode (target-head.h; c(N) is then the decode up to the final norm):
// a head call of m rows costs row + (m - 1) * extra, the root's row is always needed and a node's row
// only when the node is accepted, so head(N) = row + the sum over the kept nodes of
// min(extra, value * row) (a likely node's row joins an earlier call, an unlikely one waits until
// the walk reaches it: head_batch). Without the path head, row = extra = 0 and c(N) includes the
// logits of every node. A drafted tree is cut to its best N with d already paid (d = 0). Whether a costly
// proposer (the drafter) should draft at all follows the running gain of its trees over what the
// free proposers (n-gram lookup) offer alone, d counted (a running mean over about 4 cycles); while
// that gain stays under 2% it is skipped and drafts only on probes to re-check: 4 consecutive cycles
// whose mean gain replaces the running one (what the drafter adds differs from one position to the
// next, so one cycle is too noisy to rest a decision on), every 16th cycle at first, every 32nd, 64th,
// ... up to every 256th after probes that found no gain, every 16th again after one that did. The
// first cycles of every request are a probe, since what the drafter adds over n-gram lookup follows
// the text (code, chat, arithmetic); the node values it is computed from (the calibration) and the
// probe spacing keep their memory across requests, so a run of requests where the drafter does not
// pay costs about one probe each. Where even the drafter's best case cannot pay well (ceiling: every
// node as likely as its best calibrated key is expected to be, d counted, under 25% faster than plain
// decoding: a bound that real text meets only in stretches; on math decoding has realized about a
// third of its gain at best), no probe runs at all, so no
// request pays the drafter's catch-up over its prompt either (~0.4 ms a token, of its last 256 at most,
// for Qwen2.5-1.5B's drafter on 2 CPU cores), nor the target's features: the engine asks before the
// prefill (could_pay), and a request the drafter cannot pay for decodes as plain decoding does, its
// prefill included, with n-gram lookup drafting alone (a steep curve: a Q4_K_M target on a CPU). A
// request's catch-up over its prompt is counted against the ceiling too, until the drafter first drafts
// in it: a backlog of pairs (set_draft_cost's pair cost each) spread over the N_PROBE_FIRST cycles
// before a drafter that pays is probed again; so is, before the prefill, the target's work for the
// drafter: the cached tokens it would evaluate again for a drafter that a request without it left
// behind, and the last layer of every other token of the prompt chunks decoded with embeddings on (those holding a
// token whose feature the drafter reads: llama.cpp outputs every token of such a decode). The ceiling follows the
// curve, d and the rates (whose keys, once no longer tried, age back towards the drafter file's
// held-out priors: acceptance.h); d is unknown (0) until the drafter has run once unless measured
// apart (set_draft_cost: EdgeFalcon measures it when it loads a drafter, once per drafter, target and
// device), so that where the ceiling is closed even an engine's first request does not probe.
#pragma once

#include "falcon-edge/tree.h"

#include <cstdint>
#include <vector>

namespace fe {

class cost_model {
public:
    // c[i] = cost of verifying i+1 nodes relative to one (c[0] = 1); empty = unknown. Forgets what
    // observe_decode learnt.
    void set_curve(const std::vector<double> & c);
    const std::vector<double> & curve() const { return curve_; }
    int32_t n_max() const { return (int32_t) curve_.size(); }

    // the decode of an n-node tree took `us` microseconds
    void observe_decode(int32_t n, double us);
    // the costly proposer (the drafter) took `us` microseconds to draft a cycle's tree, its catch_up
    // (proposer.h) not counted
    void observe_draft(double us);
    // running drafting time of a cycle relative to one token's verification; until both were seen, the
    // cost set_draft_cost measured before (0 without one). Kept across requests, like the curve: both
    // belong to drafter, target and device
    double draft_cost() const;
    // the drafter's costs relative to one plain step, measured apart (engine::measure_draft_cost): d, a
    // cycle's, what draft_cost() is before this process has drafted; pair, one committed pair's in a catch-up
    // (the ceiling counts a backlog's). Kept by set_curve.
    void set_draft_cost(double d, double pair) { draft_measured_ = d; pair_cost_ = pair; }
    // the current estimate of c(n), the measured prior blended with what observe_decode saw
    double cost(int32_t n) const;
    // c(n) where the curve reaches n; beyond it (a preset tree larger than the curve) the curve's last point in
    // proportion, c(n_max) * n / n_max, as a decode that large is bound by its arithmetic; n without a curve
    double cost_extrapolated(int32_t n) const;

    // the path head's cost relative to one plain step: a call for m rows costs row + (m - 1) * extra
    // (both 0: the logits come from the decode). Kept by set_curve.
    void set_head_cost(double row, double extra);
    // a path-head call for m rows took `us` microseconds
    void observe_head(int32_t m, double us);
    double head_cost(int32_t m) const;
    double head_row() const { return head_row_; }
    double head_extra() const { return head_extra_; }
    // the rows to compute when the walk reaches node u and needs its logits: u and the nodes below it
    // whose chance of being reached from u (value ratio to u) makes their row cheaper now (extra) than
    // on demand (row): all of them while the head's costs are unknown
    std::vector<int32_t> head_batch(const tree & t, int32_t u) const;

    // the drafter's node budget this cycle, at most n_nodes_max: all of it on a probe cycle (and before
    // any choice), else twice the size chosen last, so that the tree can double from cycle to cycle
    // while the drafter skips the passes whose nodes the cut to the chosen size would drop
    int32_t draft_budget(int32_t n_nodes_max) const;

    // best node count for this already drafted tree (1 = verify the root only); the whole tree
    // when the curve is unknown
    int32_t choose(const tree & t);

    // after a cycle in which the costly proposer (nodes of origin `costly`) drafted: updates the
    // running gain of its tree, its draft_cost() counted, over the tree without its nodes
    void record_gain(const tree & t, uint8_t costly);

    // a new request: its first cycles probe, and the gain measured there replaces the running one
    void start_request();
    // whether the costly proposer is expected to pay (probes every so often while it does not); never
    // where even its best case cannot pay (ceiling), `backlog` pairs to catch up on first
    bool worth_drafting(float best_rate, int32_t backlog);
    // whether the costly proposer's best case can pay well (the ceiling clears its 25% floor), where
    // joining a request costs the target `target_work` prompt tokens' worth of work for its features: a
    // request where it cannot goes without it from the prompt on (engine.cpp); true without a curve
    bool could_pay(float best_rate, int32_t backlog, double target_work) const;
    // the best expected speed (relative to plain decoding) of any tree of the costly proposer, its
    // draft_cost() counted, when each node is worth at most `best_rate` times its parent: a chain of
    // values best_rate, best_rate^2, ... (a position has one right token, so its candidates' chances add
    // up to at most the best rate, and siblings that split it are worth less than one node holding it).
    // A backlog of pairs to catch up on first (a new prompt) is paid once: spread over the cycles until
    // a drafter that pays is probed again (16), it adds its cost over 16 to each cycle's. So does
    // target_work, in prompt tokens, each at the per-token cost of the largest tree the curve holds
    double ceiling(float best_rate, int32_t backlog, double target_work) const;

private:
    // learns c(n) from a decode of n <= n_max nodes, relative to the running one-node decode time
    void observe_curve(int32_t n, double us);
    // the next N_PROBE_CYCLES cycles draft, and their mean gain replaces the running one
    void start_probe();
    // best expected speed (and its node count) over the first n of `values` (sorted, best first)
    double best_speed(const std::vector<float> & values, double d, int32_t & best_n) const;

    std::vector<double> curve_;
    std::vector<double> seen_;          // [n_max] running mean of the observed ratios t(n) / t(1)
    std::vector<double> n_seen_;        // [n_max] their weight (capped, so the estimate keeps moving)
    double head_row_     = 0.0;         // path head: one call of one row, relative to one plain step
    double head_extra_   = 0.0;         // path head: each further row of a call
    double unit_us_      = 0.0;         // running one-node decode time
    double token_us_     = 0.0;         // running decode time over its estimated cost c(n): one token's share
    double draft_us_     = 0.0;         // running drafting time of a cycle in which the drafter ran
    double draft_measured_ = 0.0;       // set_draft_cost: the cost of a cycle measured apart (0: none)
    double pair_cost_    = 0.0;         // set_draft_cost: one pair of a catch-up (0: not measured)
    double gain_         = 0.0;   // running gain of drafting
    double probe_gain_   = 0.0;   // mean gain of the current probe's cycles so far
    int32_t n_probe_left_ = 0;    // cycles left in the current probe (0: not probing)
    int32_t n_skipped_   = 0;
    int32_t probe_every_ = 0;     // cycles between probes while drafting does not pay (0: no probe failed yet)
    int32_t n_chosen_    = 0;     // the last choose() (0: none yet)
};

} // namespace fe
