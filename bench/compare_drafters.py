"""Two or more drafter GGUFs for one target, compared where host speed cannot reach the result.

    python bench/compare_drafters.py --target qwen2.5-coder-1.5b-instruct --drafters old.gguf new.gguf \
        --work runs/qwen -o bench/results/drafter-new-vs-old.json

Both measurements are deterministic for given files:

* **held-out agreement** (with ``--work``): the conversations ``falcon-edge train fit --work`` on that directory holds
  out (the same feature directories and split: ``--seed``, 5% of the conversations), teacher-forced through the engine's own drafter runtime (fe::drafter, the
  file's weight type, the k-block alignment of drafting: after every committed pair, the context pass's rows give
  depths 1..k); top-1 agreement with the target's greedy token (the stored answer) per depth, over every answer
  position;
* **fixed-budget trees**: greedy generation with drafter-only trees of ``--tree-budget`` nodes (no n-gram branches, no
  cost model) on the first ``--n-prompts`` prompts of each benchmark set, chat-rendered as ``falcon-edge bench`` decodes
  them: τ (accepted + bonus per cycle) and accepted / drafted.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from falcon_edge import EdgeFalcon, _native
from falcon_edge.config import SpecConfig
from falcon_edge.datasets import load_prompts
from falcon_edge.models import resolve_model
from falcon_edge.train.features import load_sequences
from falcon_edge.train.prepare import feature_dirs
from falcon_edge.train.trainer import TrainConfig, split_heldout

SETS = ("mt-bench", "humaneval", "gsm8k")


def heldout_sequences(work_dir: str, seed: int) -> list:
    """The conversations a fit on `work_dir` with `seed` holds out (its feature directories and split)."""
    sequences = [s for d in feature_dirs(work_dir) for s in load_sequences(d, allow_partial=True)]
    return split_heldout(sequences, TrainConfig.heldout, seed)[1]


def heldout_agreement(target: str, drafter: str, held: list, n_threads: int) -> dict:
    """Top-1 agreement per depth of `drafter` on the held-out conversations `held` (heldout_sequences)."""
    dft = _native.Drafter(drafter, target, 0, n_threads=n_threads)
    k = dft.hparams["block_size"]
    d2t = np.array([dft.draft_to_target(j) for j in range(dft.hparams["n_vocab_draft"])])  # [V'] target ids
    hits, positions = np.zeros(k), np.zeros(k)
    for seq in held:
        feat = seq.feat.astype(np.float32)  # [n, H]
        tok, mask = seq.tokens, seq.loss_mask  # [n], [n]
        if not mask.any():
            continue  # no answer position to score
        # pair i = (f_i, t_{i+1}); with n pairs committed, row j of the context pass predicts t_{n+1+j}
        first = int(np.argmax(mask)) - 1
        dft.truncate(0)
        dft.push_pairs(feat[:first], tok[1:first + 1])
        for n in range(first, len(tok) - 1):
            if n > first:
                dft.push_pairs(feat[n - 1:n], tok[n:n + 1])
            _, logits = dft.eval_context()  # [k, V']
            for j in range(min(k, len(tok) - 1 - n)):
                if mask[n + 1 + j]:
                    hits[j] += d2t[int(np.argmax(logits[j]))] == tok[n + 1 + j]
                    positions[j] += 1
    return {"conversations": len(held), "positions": positions.tolist(), "top1_per_depth": (hits / positions).tolist(),
            "alpha": float(np.mean(hits / positions))}


def fixed_budget_trees(target: str, drafter: str, tree_budget: int, prompts: dict, max_tokens: int, n_threads: int) -> dict:
    """τ and accepted / drafted of drafter-only trees of `tree_budget` nodes, per benchmark set (`prompts`: its prompts)."""
    llm = EdgeFalcon(target, drafter=drafter, n_threads=n_threads, n_ctx=2048, tree_budget=tree_budget,
                     spec=SpecConfig(ngram_branches=0))
    out = {}
    for name, set_prompts in prompts.items():
        cycles = accepted = drafted = 0
        for prompt in set_prompts:
            # as the benchmarks decode them (and the drafter was trained): the answer to the chat-rendered prompt
            tokens = llm.chat_tokens([{"role": "user", "content": prompt}])
            st = llm.generate(tokens, max_tokens=max_tokens).stats
            cycles, accepted, drafted = cycles + st.n_cycles, accepted + st.n_accepted, drafted + st.n_drafted
        out[name] = {"tau": (accepted + cycles) / cycles, "accepted_per_drafted": accepted / max(drafted, 1)}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="registry name or path of the target GGUF")
    ap.add_argument("--drafters", nargs="+", required=True, help="drafter GGUFs to compare")
    ap.add_argument("--work", help="a fit's work directory: score its held-out conversations (optional)")
    ap.add_argument("--seed", type=int, default=0, help="the fit's seed (its held-out split)")
    ap.add_argument("--tree-budget", type=int, default=4)
    ap.add_argument("--n-prompts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--out", help="write the results here as JSON")
    args = ap.parse_args(argv)
    target = str(resolve_model(args.target))
    results = {"target": args.target, "tree_budget": args.tree_budget, "n_prompts": args.n_prompts,
               "max_tokens": args.max_tokens, "ngram_branches": 0, "drafters": {}}
    # read before any drafter runs: a missing set (FALCON_EDGE_DATA unset) fails now, not after the first drafter
    prompts = {name: load_prompts(name, args.n_prompts) for name in SETS}
    held = heldout_sequences(args.work, args.seed) if args.work else None
    for path in args.drafters:
        row = {"fixed_budget_trees": fixed_budget_trees(target, path, args.tree_budget, prompts, args.max_tokens,
                                                        args.threads)}
        if held is not None:
            row["heldout_agreement"] = heldout_agreement(target, path, held, args.threads)
        results["drafters"][path] = row
        print(json.dumps({path: row}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
