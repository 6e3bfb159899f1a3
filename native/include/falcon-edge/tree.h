// The token tree a proposer offers for verification: nodes as data (parent links), node 0 is the
// root (the last sampled token, not yet in the target's KV cache).
#pragma once

#include "llama.h"

#include <cstdint>
#include <vector>

namespace fe {

// which proposer offered a node (tree.origin); the root has ORIGIN_ROOT
enum tree_origin : uint8_t {
    ORIGIN_ROOT    = 0,
    ORIGIN_DRAFTER = 1, // the Falcon drafter (falcon-proposer.h)
    ORIGIN_NGRAM   = 2, // n-gram lookup in the context (ngram.h)
};

struct tree {
    std::vector<llama_token> token;  // [n_nodes]
    std::vector<int32_t>     parent; // [n_nodes], -1 for the root
    std::vector<int32_t>     depth;  // [n_nodes], 0 for the root
    // the proposer's estimate that the node is accepted (product of its path's acceptance
    // probabilities); the root is 1. Used to prune the tree to the budget the device affords.
    std::vector<float>       value;  // [n_nodes]
    // the proposer that offered each node (a tree_origin) and the key it filed the node under for
    // its acceptance statistics (acceptance.h; -1: none)
    std::vector<uint8_t>     origin; // [n_nodes]
    std::vector<int32_t>     bucket; // [n_nodes]

    int32_t size() const { return (int32_t) token.size(); }
};

// starts a tree holding only the root
void tree_init(tree & t, llama_token root);

// adds a child of `parent` with `token` offered by `origin` under `bucket` and returns its index
// (its value is capped at the parent's). If the parent already has a child with that token (siblings
// carry distinct tokens), returns that child, which takes value, origin and bucket of the more
// valuable offer.
int32_t tree_add(tree & t, int32_t parent, llama_token token, float value, uint8_t origin, int32_t bucket);

// a tree given as data: tokens [n_nodes] and parent links [n_nodes] (the root first, parents[0] = -1,
// every other parent an earlier node), each drafted node offered by `origin` under buckets[i] (all -1
// when buckets is empty), of value 1; throws std::invalid_argument naming the offending values
tree tree_from_parents(const std::vector<llama_token> & tokens, const std::vector<int32_t> & parents, uint8_t origin,
                       const std::vector<int32_t> & buckets);

// index of the child of `node` carrying `token`, or -1
int32_t tree_child(const tree & t, int32_t node, llama_token token);

// children of every node, in insertion order: out[node] = child indices
std::vector<std::vector<int32_t>> tree_children(const tree & t);

// leaves in depth-first order (the order seq ids are assigned in)
std::vector<int32_t> tree_leaves(const tree & t);

// path from the root to `node`, both included (std::invalid_argument for a node outside the tree)
std::vector<int32_t> tree_path(const tree & t, int32_t node);

// keeps the n_keep most valuable nodes (root included; a parent is never less valuable than its
// child, ties broken by index), fewer where more would make more than n_leaves_max leaves, and
// renumbers them in their original order
void tree_prune(tree & t, int32_t n_keep, int32_t n_leaves_max = INT32_MAX);

// nodes in depth-first pre-order: parents before children, each subtree contiguous
std::vector<int32_t> tree_dfs_order(const tree & t);

} // namespace fe
