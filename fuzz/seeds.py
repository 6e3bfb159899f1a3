"""Seed files of the fuzzers, written with the helpers the tests use (tests/helpers): a tiny random llama target
and falcon-sar drafters for it in every variant the loader distinguishes (fusion, weight type, reduced vocabulary
with d2t, stored tree), plus small prompt-set, training-set and request-body samples.

Everything is deterministic in its arguments, so a fuzz input that names a seed by index replays exactly.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import llama_cpp  # noqa: E402,F401  (before falcon_edge: one libllama per process)

# target: the smallest llama the helpers write (260 tokens, H 32, one layer), so one load takes milliseconds
TARGET_SHAPE = {"n_vocab": 260, "n_embd": 32, "n_layer": 1, "n_head": 2, "n_head_kv": 1, "n_ff": 32}

# (file name, converter arguments, DrafterConfig overrides)
DRAFTER_VARIANTS = (
    ("lstm-f32.gguf", {"outtype": "f32"}, {"fusion": "lstm", "block_size": 2}),
    ("linear-f16.gguf", {"outtype": "f16"}, {"fusion": "linear", "block_size": 3}),
    ("lstm-q8_0-d2t.gguf", {"outtype": "q8_0", "draft_vocab": list(range(3, 259, 4))}, {"fusion": "lstm", "block_size": 2}),
    ("linear-q4_0-tree.gguf", {"outtype": "q4_0", "tree_parents": [-1, 0, 0, 1, 1, 2]}, {"fusion": "linear", "block_size": 1}),
)


def write_target(out_dir: Path) -> Path:
    """The tiny target GGUF (F32, untied) every drafter seed belongs to."""
    from helpers.tiny_target import write_tiny_llama_gguf

    return Path(write_tiny_llama_gguf(out_dir / "target.gguf", seed=7, **TARGET_SHAPE).path)


def write_drafters(target: Path, out_dir: Path) -> list[Path]:
    """One drafter per DRAFTER_VARIANTS entry, converted for `target` by the real converter."""
    import torch

    from falcon_edge.convert.write_gguf import run as write_drafter
    from falcon_edge.train.target_weights import read_target_meta
    from helpers.tiny_drafter import checkpoint_of, make_tiny_drafter
    from helpers.tiny_target import write_tiny_llama_gguf

    torch.set_num_threads(1)
    tiny = write_tiny_llama_gguf(out_dir / "target-copy.gguf", seed=7, **TARGET_SHAPE)  # embed / lm_head arrays
    meta = read_target_meta(target)
    paths = []
    for name, convert_args, overrides in DRAFTER_VARIANTS:
        d2t = convert_args.get("draft_vocab")
        if d2t is not None:
            overrides = {**overrides, "draft_vocab_size": len(d2t)}
        model = make_tiny_drafter(tiny, meta, seed=len(paths), d2t=torch.tensor(d2t) if d2t else None,
                                  n_layer=1, n_ff=32, **overrides)
        paths.append(write_drafter(checkpoint_of(model), target, out_dir / name, progress=False, **convert_args))
    Path(tiny.path).unlink()
    return paths


def dataset_samples() -> dict[str, bytes]:
    """Small valid files of every prompt-set, training-set and tree-preset format (datasets, train.data, trees)."""
    mt = [{"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Shorter."]}]
    he = [{"task_id": "HumanEval/0", "prompt": "def f(x):\n    \"\"\"Double x.\"\"\"\n", "entry_point": "f"}]
    gsm = [{"question": "What is 2 + 2?", "answer": "#### 4"}]
    conv = [{"source": "gsm8k-train", "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "2 + 2?"},
                                                   {"role": "assistant", "content": "4"}]}]

    def jsonl(rows: list[dict]) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in rows).encode()

    from falcon_edge import trees

    return {
        "tree-preset": (trees.presets_dir() / "falcon-77.json").read_bytes(),
        "mt-bench": jsonl(mt),
        "humaneval": gzip.compress(jsonl(he), mtime=0),
        "gsm8k": jsonl(gsm),
        "conversations": jsonl(conv),
    }


def request_samples() -> list[bytes]:
    """Valid request bodies of both generation endpoints, streaming and not."""
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    completion = {"prompt": "ab", "max_tokens": 4, "stop": ["\n"], "seed": 1}
    return [json.dumps(b).encode() for b in (chat, {**chat, "stream": True}, completion,
                                             {**completion, "prompt": [1, 5, 9], "stream": True})]
