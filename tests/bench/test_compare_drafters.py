"""bench/compare_drafters.py on SmolLM2 and its shipped drafter. This is not a speed test."""

from __future__ import annotations

import pytest
from helpers import bench_scripts

from falcon_edge import EdgeFalcon, drafters
from falcon_edge.config import SpecConfig
from falcon_edge.datasets import load_prompts

pytestmark = pytest.mark.model


def test_fixed_budget_trees_decode_the_chat_rendered_prompts(smollm_path):
    # the drafter is trained on, and the benchmarks measure, answers to chat-rendered prompts: τ is taken there
    compare = bench_scripts.load("compare_drafters")
    drafter = str(drafters.shipped_drafter("smollm2-135m-instruct"))
    prompts = {name: load_prompts(name, 1) for name in compare.SETS}
    got = compare.fixed_budget_trees(str(smollm_path), drafter, tree_budget=4, prompts=prompts, max_tokens=16, n_threads=1)
    llm = EdgeFalcon(str(smollm_path), drafter=drafter, n_threads=1, n_ctx=2048, tree_budget=4,
                     spec=SpecConfig(ngram_branches=0))
    for name in compare.SETS:
        tokens = llm.chat_tokens([{"role": "user", "content": prompts[name][0]}])
        st = llm.generate(tokens, max_tokens=16).stats
        assert got[name]["tau"] == pytest.approx((st.n_accepted + st.n_cycles) / st.n_cycles), name


def test_a_missing_prompt_set_fails_before_any_drafter_runs(smollm_path, tmp_path, monkeypatch):
    # the drafter path does not exist either: the sets are read first, so the set is what the error names
    compare = bench_scripts.load("compare_drafters")
    monkeypatch.setenv("FALCON_EDGE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        compare.main(["--target", str(smollm_path), "--drafters", str(tmp_path / "no-drafter.gguf")])
