"""bench/prefill_model.py on reports of real `falcon-edge bench` runs of SmolLM2. Nothing asserts a timing: the
checks are that the script prices the rows as the cost model does and reads the reports' own numbers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from helpers import bench_scripts

from falcon_edge import bench

pytestmark = pytest.mark.model


def _report(tmp_path, smollm_path, drafter: str) -> Path:
    # a fixed tree budget: the drafter joins every speculative request whatever its ceiling
    report = bench.run(str(smollm_path), drafter, ["gsm8k"], 2, 6, n_threads=1, tree_budget=4, repeats=1,
                       progress=False)
    return bench._write_json(report, str(tmp_path), "bench")


def test_the_prefill_excess_is_set_against_the_ceilings_price(tmp_path, smollm_path):
    script = bench_scripts.load("prefill_model")
    path = _report(tmp_path, smollm_path, "auto")
    assert script.n_layer(str(smollm_path)) == 30  # SmolLM2-135M's decoder layers
    result = script.compare(path, None)
    report = json.loads(path.read_text())
    curve = report["verify_cost"]
    assert result["slope_model"] == pytest.approx(curve[-1] / len(curve) / 30)
    assert result["n_prompts"] == 2
    # recomputed from the runs: the excess of each prompt's speculative prefill in plain steps over its rows' price
    ratios = []
    for row in report["datasets"]["gsm8k"]["rows"]:
        (plain,), (spec,) = row["plain"], row["spec"]
        assert spec["drafter_joined"] and spec["n_prompt_features"] == spec["n_prompt"]
        step = (plain["t_total_s"] - plain["t_prefill_s"]) / plain["n_cycles"]
        excess = (spec["t_prefill_s"] - plain["t_prefill_s"]) / step
        ratios.append(excess / (spec["n_prompt_features"] * result["slope_model"]))
    assert result["measured_over_model"] == pytest.approx(statistics.mean(ratios))


def test_a_report_without_the_drafter_has_nothing_to_fit(tmp_path, smollm_path):
    path = _report(tmp_path, smollm_path, "ngram")
    with pytest.raises(SystemExit, match=r"has 0 prompt\(s\) whose drafter joined; the fit needs 2 or more"):
        bench_scripts.load("prefill_model").compare(path, None)
