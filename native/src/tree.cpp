// Tree topology helpers: building, children, leaves, paths.
#include "falcon-edge/tree.h"

#include "falcon-edge/errors.h"

#include <algorithm>
#include <stdexcept>

namespace fe {

void tree_init(tree & t, llama_token root) {
    t.token  = {root};
    t.parent = {-1};
    t.depth  = {0};
    t.value  = {1.0f};
    t.origin = {ORIGIN_ROOT};
    t.bucket = {-1};
}

tree tree_from_parents(const std::vector<llama_token> & tokens, const std::vector<int32_t> & parents, uint8_t origin,
                       const std::vector<int32_t> & buckets) {
    if (tokens.empty() || tokens.size() != parents.size() || parents[0] != -1) {
        throw std::invalid_argument(format("a tree needs matching tokens and parents with a root first, got %d and %d",
                                           (int) tokens.size(), (int) parents.size()));
    }
    if (!buckets.empty() && buckets.size() != tokens.size()) {
        throw std::invalid_argument(format("a tree needs one bucket per node, got %d buckets for %d nodes",
                                           (int) buckets.size(), (int) tokens.size()));
    }
    tree t;
    tree_init(t, tokens[0]);
    for (size_t i = 1; i < tokens.size(); ++i) {
        if (parents[i] < 0 || parents[i] >= (int32_t) i) {
            throw std::invalid_argument(format("parent of node %d must be in [0, %d), got %d", (int) i, (int) i, parents[i]));
        }
        t.token.push_back(tokens[i]);
        t.parent.push_back(parents[i]);
        t.depth.push_back(t.depth[parents[i]] + 1);
        t.value.push_back(1.0f);
        t.origin.push_back(origin);
        t.bucket.push_back(buckets.empty() ? -1 : buckets[i]);
    }
    return t;
}

int32_t tree_child(const tree & t, int32_t node, llama_token token) {
    for (int32_t i = node + 1; i < t.size(); ++i) {
        if (t.parent[i] == node && t.token[i] == token) {
            return i;
        }
    }
    return -1;
}

int32_t tree_add(tree & t, int32_t parent, llama_token token, float value, uint8_t origin, int32_t bucket) {
    value = std::min(value, t.value[parent]);
    const int32_t existing = tree_child(t, parent, token);
    if (existing >= 0) {
        if (value > t.value[existing]) {
            t.value[existing]  = value;
            t.origin[existing] = origin;
            t.bucket[existing] = bucket;
        }
        return existing;
    }
    t.token.push_back(token);
    t.parent.push_back(parent);
    t.depth.push_back(t.depth[parent] + 1);
    t.value.push_back(value);
    t.origin.push_back(origin);
    t.bucket.push_back(bucket);
    return t.size() - 1;
}

void tree_prune(tree & t, int32_t n_keep, int32_t n_leaves_max) {
    if (t.size() <= n_keep && t.size() - 1 <= n_leaves_max) {
        return; // fits: a tree of n > 1 nodes has at most n - 1 leaves
    }
    std::vector<int32_t> order(t.size());
    for (int32_t i = 0; i < t.size(); ++i) {
        order[i] = i;
    }
    // the root first, then by value; a child never outranks its parent because values only shrink
    // along a path and equal values are ordered by index (parents have smaller indices)
    std::stable_sort(order.begin() + 1, order.end(), [&](int32_t a, int32_t b) { return t.value[a] > t.value[b]; });
    // nodes join in value order, each after its parent: a child turns its parent from a leaf into an
    // inner node (as many leaves as before) unless the parent already has a child (one leaf more)
    std::vector<char> keep(t.size(), 0);
    std::vector<char> has_child(t.size(), 0);
    keep[0] = 1;
    int32_t n_kept = 1;
    int32_t n_leaves = 1;
    for (int32_t i = 1; i < std::min(n_keep, t.size()); ++i) {
        const int32_t u = order[i];
        const int32_t leaves = n_leaves + (has_child[t.parent[u]] ? 1 : 0);
        if (leaves > n_leaves_max) {
            break;
        }
        keep[u] = 1;
        has_child[t.parent[u]] = 1;
        n_leaves = leaves;
        ++n_kept;
    }
    if (n_kept == t.size()) {
        return;
    }
    tree out;
    std::vector<int32_t> new_index(t.size(), -1);
    for (int32_t i = 0; i < t.size(); ++i) {
        if (!keep[i]) {
            continue;
        }
        new_index[i] = (int32_t) out.token.size();
        out.token.push_back(t.token[i]);
        out.parent.push_back(i == 0 ? -1 : new_index[t.parent[i]]);
        out.depth.push_back(t.depth[i]);
        out.value.push_back(t.value[i]);
        out.origin.push_back(t.origin[i]);
        out.bucket.push_back(t.bucket[i]);
    }
    t = std::move(out);
}

std::vector<std::vector<int32_t>> tree_children(const tree & t) {
    std::vector<std::vector<int32_t>> out(t.size());
    for (int32_t i = 1; i < t.size(); ++i) {
        out[t.parent[i]].push_back(i);
    }
    return out;
}

std::vector<int32_t> tree_dfs_order(const tree & t) {
    const auto children = tree_children(t);
    std::vector<int32_t> order;
    std::vector<int32_t> stack = {0};
    while (!stack.empty()) {
        const int32_t u = stack.back();
        stack.pop_back();
        order.push_back(u);
        // push in reverse so the first child is visited first
        for (auto it = children[u].rbegin(); it != children[u].rend(); ++it) {
            stack.push_back(*it);
        }
    }
    return order;
}

std::vector<int32_t> tree_leaves(const tree & t) {
    const auto children = tree_children(t);
    std::vector<int32_t> leaves;
    for (int32_t u : tree_dfs_order(t)) {
        if (children[u].empty()) {
            leaves.push_back(u);
        }
    }
    return leaves;
}

std::vector<int32_t> tree_path(const tree & t, int32_t node) {
    if (node < 0 || node >= t.size()) {
        throw std::invalid_argument(format("a path ends at a node in [0, %d), got %d", t.size(), node));
    }
    std::vector<int32_t> path;
    for (int32_t u = node; u >= 0; u = t.parent[u]) {
        path.push_back(u);
    }
    std::reverse(path.begin(), path.end());
    return path;
}

} // namespace fe
