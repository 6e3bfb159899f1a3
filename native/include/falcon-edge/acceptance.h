// Online acceptance statistics of a proposer, so that tree node values are calibrated
// probabilities rather than raw proposer scores.
//
// A proposer files each node it offers under a key (tree.bucket: e.g. drafter probability bin and
// depth, or n-gram match length and depth) and values it as
//
//     value(node) = value(parent) * rate(key)
//
// where rate(key) estimates P(node accepted | parent accepted) from what verification accepted
// before: every verified node whose parent lay on the accepted path is one trial of its key, a
// success when the node lies on the path too. Until a key has been seen often, rate() leans on the
// proposer's own prior for it (a Beta prior of weight PRIOR_WEIGHT trials), and it reads the estimate
// optimistically (half a standard error up), so that uncertain keys get tried and learned. Every
// verified tree discounts all earlier trials by `decay`, a tree of the root alone too: the rates
// follow a change of text (prose -> code), and a key that stopped being tried (its rate fell below
// what a verified node costs) regains its uncertainty and gets retried.
//
// How well an n-gram key does also depends on the request at hand (a 1-token match pays in a quoted
// list, not in free prose), faster than a long memory can follow. A proposer whose keys say nothing of
// the text (n-gram lookup, unlike the drafter's probability bins) therefore gives the request a level
// of its own: the long memory's estimate is only the prior of the request's own trials, worth
// `request_weight` of them:
//
//     rate(key) = (successes in this request + request_weight * long(key)) / (trials in this request + request_weight)
//
// A key that fails all through a request then falls to half its long-run rate after request_weight
// trials, instead of the hundreds of trees the long memory needs; the next request starts from the
// long memory again (start_request).
#pragma once

#include "falcon-edge/tree.h"

#include <cstdint>
#include <vector>

namespace fe {

class acceptance_stats {
public:
    // `decay` in (0, 1]: weight of the past per verified tree (memory of about 1 / (1 - decay) trees);
    // `request_weight`: trials of the current request the long memory counts for (0: rates are the
    // long memory's alone)
    acceptance_stats(int32_t n_keys, double decay, double request_weight)
        : decay_(decay), request_weight_(request_weight), n_trials_(n_keys, 0.0), n_success_(n_keys, 0.0),
          n_trials_request_(n_keys, 0.0), n_success_request_(n_keys, 0.0) {}

    // optimistic estimate of P(accepted | parent accepted) for `key`, prior mean `prior`
    float rate(int32_t key, float prior) const;
    // the same estimate without the optimism: what a node of `key` is expected to be worth (the prior
    // itself for a key never tried)
    float mean(int32_t key, float prior) const;

    // counts the trials of the nodes of tree t offered by `origin`, given the accepted path
    // (tree_path of the accepted node, the root first)
    void observe(const tree & t, const std::vector<int32_t> & path, uint8_t origin);

    // a new request: its own trials start from zero, the long memory stays
    void start_request();

    int32_t n_keys() const { return (int32_t) n_trials_.size(); }

private:
    // the estimate read `z` standard errors up
    float estimate(int32_t key, float prior, double z) const;

    double decay_;
    double request_weight_;
    std::vector<double> n_trials_;  // [n_keys]
    std::vector<double> n_success_; // [n_keys]
    std::vector<double> n_trials_request_;  // [n_keys] trials of the current request
    std::vector<double> n_success_request_; // [n_keys]
};

} // namespace fe
