// Greedy and stochastic (recursive rejection sampling) acceptance walks.
#include "falcon-edge/verify.h"

#include <algorithm>
#include <unordered_map>

namespace fe {

// residual after rejecting a child proposed by row q: p <- normalize(max(p - q, 0))
static void subtract_proposal(std::vector<token_prob> & p, const float * q_row, llama_token rejected) {
    double z = 0.0;
    for (auto & tp : p) {
        const float q = q_row != nullptr ? q_row[tp.id] : (tp.id == rejected ? 1.0f : 0.0f);
        tp.p = std::max(0.0f, tp.p - q);
        z += tp.p;
    }
    if (z <= 0.0) {
        return; // p was contained in q: cannot happen for a rejected child, keep p as is
    }
    for (auto & tp : p) {
        tp.p = (float) (tp.p / z);
    }
}

// q after child `rejected` was drawn from it without replacement: remove the token, renormalize
static void remove_from_proposal(std::vector<float> & q, llama_token rejected) {
    const float removed = q[rejected];
    q[rejected] = 0.0f;
    const float z = 1.0f - removed;
    if (z <= 0.0f) {
        return;
    }
    for (float & v : q) {
        v /= z;
    }
}

// one node of the stochastic walk: returns the accepted child or -1 and leaves the residual in p
static int32_t accept_child(const tree & t, const std::vector<int32_t> & children, std::vector<token_prob> & p, rng & r) {
    std::unordered_map<int32_t, std::vector<float>> q_live; // proposal rows as they shrink
    for (int32_t c : children) {
        const llama_token tok = t.token[c];
        float p_c = 0.0f;
        for (const auto & tp : p) {
            if (tp.id == tok) {
                p_c = tp.p;
                break;
            }
        }
        const float * q = nullptr;
        if (t.q_row[c] >= 0) {
            auto it = q_live.find(t.q_row[c]);
            if (it == q_live.end()) {
                const float * row = t.q_rows.data() + (size_t) t.q_row[c] * t.n_vocab;
                it = q_live.emplace(t.q_row[c], std::vector<float>(row, row + t.n_vocab)).first;
            }
            q = it->second.data();
        }
        const float q_c = q != nullptr ? q[tok] : 1.0f;
        if (q_c > 0.0f && r.uniform() < std::min(1.0, (double) p_c / q_c)) {
            return c;
        }
        subtract_proposal(p, q, tok);
        if (q != nullptr) {
            remove_from_proposal(q_live[t.q_row[c]], tok);
        }
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
