// Falcon tree growth: context pass, Cartesian k-blocks, expansion passes.
#include "falcon-edge/falcon-proposer.h"
#include "falcon-edge/gguf-schema.h"

#include <algorithm>
#include <cmath>

namespace fe {

namespace gs = gguf_schema;

// the drafter's calibration is a property of drafter and target: a long memory (~1000 verified trees),
// no level of the request's own (its probability bins already follow the text; and a request level
// would keep a drafter gated off by a few early rejections from the trials that could restore it)
static constexpr double STATS_DECAY = 0.999;
// dynamic tree: block-completing nodes less likely than this are not expanded by a further pass
static constexpr float EXPAND_MIN_VALUE = 0.05f;

falcon_proposer::falcon_proposer(std::unique_ptr<drafter> dft)
    : dft_(std::move(dft)), stats_(gs::N_ACCEPT_KEYS, STATS_DECAY, 0.0) {}

void falcon_proposer::observe(const tree & t, const std::vector<int32_t> & path) {
    stats_.observe(t, path, ORIGIN_DRAFTER);
}

float falcon_proposer::best_rate() const {
    const std::vector<float> & prior = dft_->hparams().accept_rates;
    if (prior.empty()) {
        return 1.0f;
    }
    float best = 0.0f;
    for (int32_t key = 0; key < (int32_t) prior.size(); ++key) {
        best = std::max(best, stats_.mean(key, prior[key]));
    }
    return best;
}

int32_t falcon_proposer::reset(int32_t n_keep) {
    const int32_t kept = std::min(n_keep, dft_->n_pairs());
    dft_->truncate(kept);
    return kept;
}

void falcon_proposer::accept(const float * feats, const llama_token * next, int32_t n) {
    dft_->push_pairs(feats, next, n);
}

// top-k of one row of logits as (draft id, probability), most probable first: one scan keeps the k
// largest in order, a second sums the softmax normalizer (in float: a row holds n_vocab_draft logits)
static std::vector<std::pair<int32_t, float>> top_candidates(const float * logits, int32_t n_vocab, int32_t k) {
    k = std::min(k, n_vocab);
    std::vector<int32_t> top; // ids of the k largest logits so far, largest first
    top.reserve(k + 1);
    for (int32_t i = 0; i < n_vocab; ++i) {
        if ((int32_t) top.size() == k && logits[i] <= logits[top.back()]) {
            continue;
        }
        auto at = std::upper_bound(top.begin(), top.end(), logits[i], [&](float l, int32_t id) { return l > logits[id]; });
        top.insert(at, i);
        if ((int32_t) top.size() > k) {
            top.pop_back();
        }
    }
    const float l_max = logits[top[0]];
    float z = 0.0f;
    for (int32_t i = 0; i < n_vocab; ++i) {
        z += std::exp(logits[i] - l_max);
    }
    std::vector<std::pair<int32_t, float>> out(k);
    for (int32_t i = 0; i < k; ++i) {
        out[i] = {top[i], std::exp(logits[top[i]] - l_max) / z};
    }
    return out;
}

std::vector<std::pair<int32_t, int32_t>> falcon_proposer::child_ranks(int32_t shape, const spec_params & sp) const {
    std::vector<std::pair<int32_t, int32_t>> out;
    if (sp.preset_rank.empty()) {
        for (int32_t r = 0; r < sp.top_k_draft; ++r) {
            out.push_back({r, -1});
        }
        return out;
    }
    for (int32_t c : preset_children_[shape < 0 ? sp.preset_rank.size() : shape]) {
        out.push_back({sp.preset_rank[c], c});
    }
    return out;
}

void falcon_proposer::add_block(tree & t, int32_t node, int32_t shape, int32_t block, const float * feat,
                                const float * logits, const spec_params & sp, std::vector<frontier> & next) {
    const drafter_hparams & hp = dft_->hparams();
    const int32_t k = hp.block_size;
    const bool preset = !sp.preset_rank.empty();
    const int32_t n_rows = preset ? k : std::min(k, sp.depth_max - t.depth[node]);
    if (n_rows <= 0) {
        return;
    }
    const int32_t n_cand = preset ? *std::max_element(sp.preset_rank.begin(), sp.preset_rank.end()) + 1 : sp.top_k_draft;
    std::vector<std::vector<std::pair<int32_t, float>>> rows(n_rows);
    for (int32_t j = 0; j < n_rows; ++j) {
        rows[j] = top_candidates(logits + (size_t) j * hp.n_vocab_draft, hp.n_vocab_draft, n_cand);
    }
    // walk the block row by row: level j holds (tree node, preset node) pairs at depth(node) + j
    std::vector<std::pair<int32_t, int32_t>> level = {{node, shape}};
    for (int32_t j = 0; j < n_rows && !level.empty(); ++j) {
        std::vector<std::pair<int32_t, int32_t>> deeper;
        for (const auto & [u, sh] : level) {
            for (const auto & [rank, child] : child_ranks(sh, sp)) {
                if (rank >= (int32_t) rows[j].size()) {
                    continue;
                }
                const auto & cand = rows[j][rank];
                const llama_token id = dft_->draft_to_target(cand.first);
                const int32_t key = gs::accept_key(cand.second, t.depth[u] + 1);
                // the prior: the drafter file's held-out rate of the key, else the drafter's own probability
                const float prior = hp.accept_rates.empty() ? cand.second : hp.accept_rates[key];
                const float value = t.value[u] * stats_.rate(key, prior);
                deeper.push_back({tree_add(t, u, id, value, ORIGIN_DRAFTER, key), child});
            }
        }
        level = std::move(deeper);
    }
    if (level.empty() || t.depth[level[0].first] != t.depth[node] + k) {
        return;
    }
    for (const auto & [u, sh] : level) {
        if (!preset || !preset_children_[sh].empty()) {
            next.push_back({u, sh, block, std::vector<float>(feat, feat + (size_t) k * hp.n_embd)});
        }
    }
}

// drafted nodes (the root not counted) whose value is at least v
static int32_t n_at_least(const tree & t, float v) {
    int32_t n = 0;
    for (int32_t u = 1; u < t.size(); ++u) {
        n += t.value[u] >= v;
    }
    return n;
}

void falcon_proposer::draft(const std::vector<llama_token> & tokens, int32_t n_nodes_max, const spec_params & sp,
                            const sampling_params & smp, rng & r, tree & out) {
    const drafter_hparams & hp = dft_->hparams();
    const int32_t k = hp.block_size;
    if (dft_->n_pairs() < k) {
        return; // the context pass drafts a block from the last k committed pairs
    }
    const bool preset = !sp.preset_rank.empty();
    if (preset) {
        const int32_t n = (int32_t) sp.preset_rank.size();
        preset_children_.assign(n + 1, {});
        for (int32_t i = 0; i < n; ++i) {
            preset_children_[sp.preset_parent[i] < 0 ? n : sp.preset_parent[i]].push_back(i);
        }
    }
    dft_->eval_context(feat_, logits_);
    n_passes_ += 1;

    std::vector<frontier> front;
    add_block(out, 0, -1, -1, feat_.data(), logits_.data(), sp, front);

    int32_t n_blocks = 0; // blocks evaluated in this phase (their indices for parent links)
    for (int32_t pass = 1; (preset || pass < sp.n_passes) && !front.empty(); ++pass) {
        // dynamic tree: expand the most valuable block-completing nodes; the value of a deeper node
        // never exceeds its parent's, so expanding more than the budget allows cannot help
        std::sort(front.begin(), front.end(), [&](const frontier & a, const frontier & b) {
            return out.value[a.node] > out.value[b.node];
        });
        int32_t n_expand = preset ? (int32_t) front.size()
                                  : std::min<int32_t>((int32_t) front.size(), std::max(1, sp.top_k_draft));
        // a node below an unlikely path adds less than its value to the expected accepted length:
        // such paths are not worth a drafter pass
        while (!preset && n_expand > 0 && out.value[front[n_expand - 1].node] < EXPAND_MIN_VALUE) {
            --n_expand;
        }
        // a child ranks below its parent and below every node already as valuable: where those fill
        // the budget, the final prune would drop whatever the pass adds
        while (!preset && n_expand > 0 && n_at_least(out, out.value[front[n_expand - 1].node]) > n_nodes_max - 2) {
            --n_expand;
        }
        if (n_expand == 0) {
            break;
        }
        std::vector<drafter_block> blocks(n_expand);
        for (int32_t b = 0; b < n_expand; ++b) {
            const std::vector<int32_t> path = tree_path(out, front[b].node);
            blocks[b].parent = front[b].block;
            blocks[b].feat = front[b].feat;
            blocks[b].tok.assign(k, 0);
            for (int32_t j = 0; j < k; ++j) {
                blocks[b].tok[j] = out.token[path[path.size() - k + j]];
            }
        }
        dft_->eval_blocks(blocks, feat_, logits_);
        n_passes_ += 1;
        std::vector<frontier> next;
        for (int32_t b = 0; b < n_expand; ++b) {
            add_block(out, front[b].node, front[b].shape, n_blocks + b, feat_.data() + (size_t) b * k * hp.n_embd,
                      logits_.data() + (size_t) b * k * hp.n_vocab_draft, sp, next);
        }
        n_blocks += n_expand;
        front = std::move(next);
    }
    tree_prune(out, n_nodes_max);
}

} // namespace fe
