"""Hardware-aware tree size: plain decoding where verification is too expensive to win, trees where it is cheap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falcon_edge import EdgeFalcon, cost_curve
from falcon_edge.datasets import load_prompts

PROMPT = "one two three four five one two three four five one two three four five one two three"


def _run(tiny_path, curve):
    llm = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2, verify_cost=curve)
    plain = llm.generate(PROMPT, max_tokens=64, speculative=False)
    spec = llm.generate(PROMPT, max_tokens=64)
    assert spec.tokens == plain.tokens
    return spec.stats


def test_expensive_verification_falls_back_to_plain(tiny_path):
    # every extra node costs twice a whole step: no tree can beat one token per step
    st = _run(tiny_path, [1.0] + [2.0 * n for n in range(2, 17)])
    assert st.n_drafted == 0 and st.n_nodes_max == 1


def test_cheap_verification_grows_trees(tiny_path):
    # verification of up to 16 nodes costs as much as one: drafted trees always pay
    st = _run(tiny_path, [1.0] * 16)
    assert st.n_nodes_max > 2 and st.n_drafted > 0


def test_measured_curve_is_cached_and_starts_at_one(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "models"))
    llm = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2)
    curve = list(llm._native_engine().verify_cost())
    # a CPU build measures trees of up to 16 nodes, also where layers are asked onto a GPU
    assert cost_curve.n_max(0) == cost_curve.n_max(-1) == cost_curve.N_MAX_CPU
    assert curve[0] == 1.0 and len(curve) == cost_curve.N_MAX_CPU and all(c > 0 for c in curve)
    assert (tmp_path / "verify-cost.json").is_file()


@pytest.mark.parametrize("change", ["method", "range", "damaged"])
def test_cached_curve_is_used_until_the_method_or_range_changes(tiny_path, tmp_path, monkeypatch, change):
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "models"))
    key = cost_curve._key(Path(tiny_path), 2, 256, 0, True, False)
    cached = [1.0] + [1.5] * (cost_curve.N_MAX_CPU - 1)
    (tmp_path / "verify-cost.json").write_text(json.dumps({key: {"curve": cached, "head": [0.25, 0.125]}}))
    engine = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2)._native_engine()
    assert list(engine.verify_cost()) == cached and engine.head_cost() == (0.25, 0.125)
    if change == "method":
        monkeypatch.setattr(cost_curve, "METHOD", cost_curve.METHOD + 1)
    elif change == "range":
        # a curve cached for fewer sizes than this device's range (an older release's GPU curve) is measured again
        (tmp_path / "verify-cost.json").write_text(json.dumps({key: {"curve": cached[:8], "head": [0.25, 0.125]}}))
    else:
        # so is one whose numbers are no costs (json writes and reads NaN)
        damaged = cached[:3] + [float("nan")] + cached[4:]
        (tmp_path / "verify-cost.json").write_text(json.dumps({key: {"curve": damaged, "head": [0.25, 0.125]}}))
    engine = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2)._native_engine()
    curve = list(engine.verify_cost())
    assert len(curve) == cost_curve.N_MAX_CPU and curve[0] == 1.0 and curve != cached
    row, extra = engine.head_cost()
    assert row > 0 and extra >= 0 and (row, extra) != (0.25, 0.125)


def test_curve_without_the_path_head_is_cached_apart(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "models"))
    with_head = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2)._native_engine()
    without = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2, path_head=False)._native_engine()
    assert without.head_cost() == (0.0, 0.0) and with_head.head_cost()[0] > 0
    cached = json.loads((tmp_path / "verify-cost.json").read_text())
    assert sorted(k.split("|")[6] for k in cached) == ["ph0", "ph1"]


def test_curve_with_flash_attention_is_cached_apart(tiny_path, tmp_path, monkeypatch):
    # flash attention changes what a tree's decode costs (most on a GPU): its curve is its own
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "models"))
    EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2)
    EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2, flash_attn=True)
    cached = json.loads((tmp_path / "verify-cost.json").read_text())
    assert sorted(k.split("|")[7] for k in cached) == ["fa0", "fa1"]


def test_cache_drops_curves_of_deleted_models(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "models"))
    stale = f"{tmp_path / 'gone.gguf'}|1|2|t2|b256|ngl0|x"
    (tmp_path / "verify-cost.json").write_text(json.dumps({stale: [1.0, 1.5]}))
    EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2)
    cached = json.loads((tmp_path / "verify-cost.json").read_text())
    assert stale not in cached and len(cached) == 1


@pytest.mark.parametrize("bad", [[], [0.0, 1.0], [1.0, -2.0]])
def test_bad_curve(tiny_path, bad):
    with pytest.raises(ValueError, match="verify_cost"):
        EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, verify_cost=bad)


def test_decodes_refine_a_wrong_curve(tiny_path):
    # a prior that calls verification free: the engine verifies large n-gram trees, times them against one-node
    # decodes, and its estimate moves toward the real cost (about 3x one node for 16 nodes on this target)
    llm = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=1024, n_threads=2, verify_cost=[1.0] * 16)
    eng = llm._native_engine()
    assert list(eng.verify_cost_estimate()) == [1.0] * 16
    # chat prompts: until the random target falls into a loop there is no match and the step decodes one node
    sizes = [llm.generate(p, max_tokens=160).stats.n_nodes_max for p in load_prompts("mt-bench", 6)]
    assert max(sizes) > 8
    estimate = list(eng.verify_cost_estimate())
    assert estimate[0] == 1.0 and max(estimate) > 1.3
    assert list(eng.verify_cost()) == [1.0] * 16  # the measured prior itself is kept


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [1.0, 2.0, 0.0], [float("inf")]])
def test_the_engine_refuses_costs_that_are_no_costs(tiny_path, bad):
    # the native setter checks every size, not only the first: NaN silently turned speculation off
    engine = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2, verify_cost=[1.0] * 4)._native_engine()
    with pytest.raises(ValueError, match="must be finite and positive"):
        engine.set_verify_cost(bad)
