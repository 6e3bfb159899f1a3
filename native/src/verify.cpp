// Greedy and stochastic (recursive rejection sampling) acceptance walks.
#include "falcon-edge/verify.h"

namespace fe {

// residual after rejecting a child, a point mass on its token: p <- normalize(max(p - 1[rejected], 0))
static void subtract_point_mass(std::vector<token_prob> & p, llama_token rejected) {
    double z = 0.0;
    for (auto & tp : p) {
        if (tp.id == rejected) {
            tp.p = 0.0f;
        }
        z += tp.p;
    }
    if (z <= 0.0) {
        return; // p was the point mass itself: cannot happen for a rejected child, keep p as is
    }
    for (auto & tp : p) {
        tp.p = (float) (tp.p / z);
    }
}

// one node of the stochastic walk: returns the accepted child or -1 and leaves the residual in p
static int32_t accept_child(const tree & t, const std::vector<int32_t> & children, std::vector<token_prob> & p, rng & r) {
    for (int32_t c : children) {
        const llama_token tok = t.token[c];
        float p_c = 0.0f;
        for (const auto & tp : p) {
            if (tp.id == tok) {
                p_c = tp.p;
                break;
            }
        }
        if (r.uniform() < (double) p_c) {
            return c;
        }
        subtract_point_mass(p, tok);
    }
    return -1;
}

walk_result verify_tree(const tree & t, const node_logits & logits_of, int32_t n_vocab, const sampling_params & sp,
                        const std::vector<llama_token> & history, rng & r) {
    const auto children = tree_children(t);
    const bool greedy = sp.temperature <= 0.0f;

    std::vector<llama_token> hist = history;
    std::vector<token_prob> p;
    walk_result res;
    for (int32_t u = 0;;) {
        const float * logits = logits_of(u);
        int32_t next_node = -1;
        if (greedy) {
            const llama_token id = pick_greedy(logits, n_vocab, sp, hist);
            next_node = tree_child(t, u, id);
            res.next = id;
        } else {
            dist_from_logits(logits, n_vocab, sp, hist, p);
            next_node = accept_child(t, children[u], p, r);
            if (next_node < 0) {
                res.next = sample_dist(p, r);
            }
        }
        if (next_node < 0) {
            res.node = u;
            res.n_accepted = t.depth[u];
            return res;
        }
        u = next_node;
        hist.push_back(t.token[u]);
    }
}

} // namespace fe
