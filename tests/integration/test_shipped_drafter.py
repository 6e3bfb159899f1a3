"""The shipped SmolLM2 drafter loads with its target, stays lossless, and its drafts are accepted.

The thresholds come from measurements on held-out prompts (not MT-Bench / HumanEval / GSM8K /
Vicuna-bench); see models/falcon-smollm2-135m-instruct.md for the numbers. They sit well below the
measured values so that CI catches a broken or mismatched drafter, not noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from falcon_edge import EdgeFalcon, drafters
from falcon_edge.errors import UnknownModelError

REPO = Path(__file__).resolve().parents[2]
DRAFTER = REPO / "models" / "falcon-smollm2-135m-instruct.gguf"

# held-out, non-benchmark prompts
PROMPTS = [
    "Give three tips for staying healthy.",
    "Write a Python function that reverses a string.",
    "A farmer has 12 cows and buys 7 more. How many cows does he have now?",
    "Explain what a binary search does in two sentences.",
]
# measured on these prompts (64 tokens each, tree budget 4, greedy): tau 1.29, draft acceptance 0.096;
# an untrained (random) drafter gives tau ~1.0 and acceptance ~0.01
MIN_TAU = 1.12  # accepted tokens per verification cycle, bonus included
MIN_DRAFT_ACCEPTANCE = 0.05  # n_accepted / n_drafted over all prompts


pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def falcon(smollm_path):
    # one thread: on a shared 2-core runner, two llama.cpp threads next to other jobs run ~10x slower
    return EdgeFalcon.from_name("smollm2-135m-instruct", n_ctx=1024, tree_budget=4, n_threads=1)


def test_a_registry_name_gets_the_drafter_installed_with_the_package(falcon):
    assert falcon.mode == "falcon"
    assert falcon.drafter_path == drafters.drafters_dir() / DRAFTER.name
    assert falcon.drafter_path.read_bytes() == DRAFTER.read_bytes()


def test_auto_drafter_pairs_registry_names_and_files_named_after_them(smollm_path, tiny_path):
    # the registry's file by path, as an export of it beside the source would be
    by_path = EdgeFalcon(smollm_path, n_ctx=256, n_threads=1)
    assert (by_path.mode, by_path.drafter_path) == ("falcon", drafters.drafters_dir() / DRAFTER.name)
    assert drafters.shipped_drafter_for_file(Path("exports/SmolLM2-135M-Instruct-f16.gguf")) == by_path.drafter_path
    assert drafters.shipped_drafter_for_file(Path("qwen2.5-coder-1.5b-instruct-q8_0.gguf")).name == \
        "falcon-qwen2.5-coder-1.5b-instruct.gguf"
    # a file named after no registry target with a drafter decodes plainly, as does drafter=None
    assert EdgeFalcon(tiny_path, n_ctx=256, n_threads=1).mode == "plain"
    assert drafters.shipped_drafter_for_file(Path("my-smollm2-135m-instruct.gguf")) is None
    assert EdgeFalcon("smollm2-135m-instruct", drafter=None, n_ctx=256, n_threads=1).mode == "plain"
    assert drafters.shipped_drafter("gemma-3-270m") is None
    with pytest.raises(UnknownModelError, match="no-such-model"):
        EdgeFalcon.from_name("no-such-model")
    with pytest.raises(UnknownModelError, match="no-such-model"):
        drafters.shipped_drafter("no-such-model")


def test_shipped_drafter_is_accepted(falcon):
    accepted = drafted = cycles = 0
    for prompt in PROMPTS:
        out = falcon.chat([{"role": "user", "content": prompt}], temperature=0, max_tokens=64)
        stats = out["falcon"]
        accepted += stats["n_accepted"]
        drafted += stats["n_drafted"]
        cycles += stats["n_cycles"]
    tau = (accepted + cycles) / cycles
    assert drafted > 0
    assert tau >= MIN_TAU, f"tau {tau:.2f} below {MIN_TAU}"
    assert accepted / drafted >= MIN_DRAFT_ACCEPTANCE, f"draft acceptance {accepted / drafted:.2f} below {MIN_DRAFT_ACCEPTANCE}"


def test_shipped_drafter_is_lossless(falcon, smollm_path):
    plain = EdgeFalcon(smollm_path, drafter=None, n_ctx=1024, n_threads=1)
    for prompt in PROMPTS[:2]:
        messages = [{"role": "user", "content": prompt}]
        a = falcon.chat(messages, temperature=0, max_tokens=32)["choices"][0]["message"]["content"]
        b = plain.chat(messages, temperature=0, max_tokens=32)["choices"][0]["message"]["content"]
        # a quantized target's batched and single-token logits may differ on near-ties: compare a prefix
        assert a[:40] == b[:40]


@pytest.mark.parametrize("budget, expands", [(3, False), (12, True)])
def test_expansion_passes_run_only_where_the_budget_keeps_their_nodes(smollm_path, budget, expands):
    # k = 2: the context pass drafts a depth-1 node above every depth-2 frontier node, so in a tree of 3 nodes
    # (root + 2) a child of the frontier could never outrank the two nodes above it and survive the cut to the budget
    llm = EdgeFalcon(smollm_path, drafter=DRAFTER, n_ctx=1024, tree_budget=budget, n_threads=1)
    passes = cycles = 0
    for prompt in PROMPTS[:2]:
        stats = llm.chat([{"role": "user", "content": prompt}], temperature=0, max_tokens=32)["falcon"]
        passes += stats["n_draft_passes"]
        cycles += stats["n_cycles"]
    assert passes >= cycles and (passes > cycles) == expands, (passes, cycles)
