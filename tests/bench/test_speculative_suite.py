"""The speculative-vs-plain benchmark harness (``falcon-edge bench``) on SmolLM2: balanced run order, every run
recorded, per-prompt ratios and the summary table. This is not a speed test: nothing here asserts a timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from falcon_edge import EdgeFalcon, bench, drafters

pytestmark = pytest.mark.model


def test_runs_alternate_so_that_both_modes_share_the_drift():
    assert bench._abba(1) == ["plain", "spec"]
    assert bench._abba(3) == ["plain", "spec", "spec", "plain", "plain", "spec"]


def test_report_holds_every_run_and_per_prompt_ratios(smollm_path):
    report = bench.run(str(smollm_path), "ngram", ["gsm8k", "humaneval"], 2, 12, n_threads=1, repeats=2, progress=False)
    assert report["repeats"] == 2 and report["temperature"] == 0.0
    # SmolLM2 on the CPU: trees take their logits from the path head, whose measured costs the report keeps
    assert report["path_head"] is True and len(report["head_cost"]) == 2 and report["head_cost"][0] > 0
    for name, d in report["datasets"].items():
        assert d["n_prompts"] == 2 and len(d["speedup_per_prompt"]) == 2, name
        for row in d["rows"]:
            assert len(row["plain"]) == 2 and len(row["spec"]) == 2
            assert all(s["mode"] == "plain" for s in row["plain"]) and all(s["mode"] == "ngram" for s in row["spec"])
            runs = row["plain"] + row["spec"]
            assert all(s["n_generated"] == len(s["tokens"]) > 0 and s["text"] for s in runs)
            # every run is a new request: nothing of the prompt is cached, so a drafter catches up on all of it
            assert all(s["n_prefill"] == s["n_prompt"] for s in runs)
            # greedy and lossless: a speculative run leaves the plain tokens only at a genuine tie (TIE_EPS of
            # tests/integration/test_lossless_quantized.py), and the report says where
            assert all(d["gap"] is not None and d["gap"] < 1.0 for d in row["divergences"]), row["divergences"]
            assert {d["run"] for d in row["divergences"]} == {i for i, s in enumerate(row["spec"])
                                                                if s["tokens"] != row["plain"][0]["tokens"]}
            assert row["plain"][0]["tokens"] == row["plain"][1]["tokens"]
        assert d["identical"] == sum(not r["divergences"] for r in d["rows"]), name
        assert d["plain_tokens_per_s"] > 0 and d["spec_tokens_per_s"] > 0 and d["tau"] >= 1.0
        assert 0.0 <= d["ngram_share"] <= 1.0
        # plain decoding costs one step per cycle by any curve; the speculative runs' steps follow their trees
        assert all(s["verify_units"] == pytest.approx(s["n_cycles"]) for r in d["rows"] for s in r["plain"]), name
        assert all(s["verify_units"] > 0 for r in d["rows"] for s in r["spec"]), name
        assert d["modeled_speedup"] > 0
        # what a user waits for, recomputed from the runs: prefill time over plain's, tokens over whole requests
        plain = [s for r in d["rows"] for s in r["plain"]]
        spec = [s for r in d["rows"] for s in r["spec"]]
        assert d["prefill_ratio"] == pytest.approx(sum(s["t_prefill_s"] for s in spec) / sum(s["t_prefill_s"] for s in plain))
        assert d["end_to_end_speedup"] == pytest.approx(
            (sum(s["n_generated"] for s in spec) / sum(s["t_total_s"] for s in spec))
            / (sum(s["n_generated"] for s in plain) / sum(s["t_total_s"] for s in plain)))
        # plain runs never call the path head; the speculative runs' head rows per cycle are recorded
        assert all(s["n_head_rows"] == 0 for r in d["rows"] for s in r["plain"]), name
        assert d["head_rows_per_cycle"] == pytest.approx(sum(s["n_head_rows"] for s in spec) / sum(s["n_cycles"] for s in spec))
        # the plain runs' spread, recomputed from the recorded runs: relative deviations from each prompt's mean
        devs = []
        for r in d["rows"]:
            speeds = [s["n_generated"] / (s["t_total_s"] - s["t_prefill_s"]) for s in r["plain"]]
            devs += [v / (sum(speeds) / 2) - 1.0 for v in speeds]
        assert d["plain_noise"] == pytest.approx((sum(x * x for x in devs) / 2) ** 0.5), name
    table = bench.format_table(report)
    assert "gsm8k" in table and "humaneval" in table and "prompts min-max" in table and "plain noise" in table
    assert "end-to-end" in table
    assert " greedy " in table and "identical" in table


def test_sampling_runs_share_a_seed_per_repeat(smollm_path):
    report = bench.run(str(smollm_path), "ngram", ["mt-bench"], 2, 24, n_threads=1, repeats=2, temperature=1.5,
                       seed=7, progress=False)
    assert report["temperature"] == 1.5 and report["seed"] == 7
    d = report["datasets"]["mt-bench"]
    for row in d["rows"]:
        # plain, spec, spec, plain: repeat r of each mode samples with seed 7 + r
        assert [s["seed"] for s in row["plain"]] == [7, 8] and [s["seed"] for s in row["spec"]] == [7, 8]
        # at 1.5 two seeds sample different answers: no prompt's runs all agree
        assert len({s["text"] for s in row["plain"]}) == 2, row["plain"]
    assert d["identical"] == 0 and d["max_divergence_gap"] is None and "divergences" not in d["rows"][0]
    assert d["tau"] >= 1.0 and d["modeled_speedup"] > 0
    assert "temperature 1.5 seed 7" in bench.format_table(report).splitlines()[0]


def test_divergence_gives_the_position_and_the_logit_gap(smollm_path):
    llm = EdgeFalcon(str(smollm_path), drafter="ngram", n_threads=1)
    prompt = llm.tokenize("The three primary colours are")
    ref = llm.generate(prompt, max_tokens=8, speculative=False).tokens
    assert bench.divergence(llm, prompt, ref, list(ref)) is None
    assert bench.divergence(llm, prompt, ref, ref[:5]) == {"at": 5, "gap": None}
    eng = llm._native_engine()
    eng.prefill_only(prompt + ref[:2])
    logits = np.frombuffer(eng.tree_logits([ref[2]], [-1]), dtype=np.float32)  # the logits that choose ref[3]
    other = next(int(t) for t in np.argsort(logits)[::-1] if t != ref[3])
    d = bench.divergence(llm, prompt, ref, ref[:3] + [other])
    assert d["at"] == 3
    assert d["gap"] == pytest.approx(float(max(logits.max() - logits[ref[3]], logits.max() - logits[other])))
    assert d["gap"] > 0
    # the probe leaves the engine consistent: the next speculative run is plain decoding's again
    assert llm.generate(prompt, max_tokens=8).tokens == ref


def test_first_prompt_selects_the_prompts_that_run(smollm_path):
    report = bench.run(str(smollm_path), "ngram", ["gsm8k"], 1, 4, n_threads=1, repeats=1, first_prompt=1,
                       progress=False)
    assert report["first_prompt"] == 1
    # one plain run per prompt: no spread to measure
    assert report["datasets"]["gsm8k"]["plain_noise"] is None and bench.format_table(report).splitlines()[-1].endswith(" -")
    # the run's prompt is the second of the set (105 characters against the first's 280): its prefill is shorter
    n_prompt = report["datasets"]["gsm8k"]["rows"][0]["plain"][0]["n_prompt"]
    first = bench.run(str(smollm_path), "ngram", ["gsm8k"], 1, 4, n_threads=1, repeats=1, progress=False)
    assert first["first_prompt"] == 0
    assert n_prompt < first["datasets"]["gsm8k"]["rows"][0]["plain"][0]["n_prompt"]


def test_answers_that_end_on_their_first_token_are_left_out_of_the_speeds(smollm_path):
    # one token is sampled from the prefill's logits: no decoding time to divide by
    with pytest.raises(ValueError, match="no prompt of 2 decoded past its first token in every run"):
        bench.run(str(smollm_path), "ngram", ["gsm8k"], 2, 1, n_threads=1, repeats=1, progress=False)
    report = bench.run(str(smollm_path), "ngram", ["gsm8k"], 1, 6, n_threads=1, repeats=1, first_prompt=2, progress=False)
    timed = report["datasets"]["gsm8k"]
    short = [{mode: [{**s, "n_generated": 1, "tokens": s["tokens"][:1], "n_cycles": 0, "t_total_s": s["t_prefill_s"]}
                     for s in row[mode]] for mode in ("plain", "spec")} | {"divergences": []} for row in timed["rows"]]
    mixed = bench._summary(short + timed["rows"])
    assert (mixed["n_prompts"], mixed["n_prompts_timed"]) == (2, 1)
    assert (mixed["speedup"], mixed["speedup_per_prompt"], mixed["tau"]) == \
        (timed["speedup"], timed["speedup_per_prompt"], timed["tau"])


def test_the_default_drafter_is_the_shipped_one_else_ngram(smollm_path, tiny_path):
    shipped = bench.run(str(smollm_path), "auto", ["gsm8k"], 1, 4, n_threads=1, repeats=1, progress=False)
    assert shipped["drafter"] == str(drafters.drafters_dir() / "falcon-smollm2-135m-instruct.gguf")
    assert shipped["datasets"]["gsm8k"]["rows"][0]["spec"][0]["mode"] == "falcon"
    other = bench.run(str(tiny_path), "auto", ["gsm8k"], 1, 4, n_threads=1, repeats=1, progress=False)
    assert other["drafter"] == "ngram" and other["datasets"]["gsm8k"]["rows"][0]["spec"][0]["mode"] == "ngram"


def test_repeats_must_be_positive(smollm_path):
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        bench.run(str(smollm_path), "ngram", ["gsm8k"], 1, 4, repeats=0, progress=False)


def test_temperature_must_not_be_negative(smollm_path):
    with pytest.raises(ValueError, match="temperature must be >= 0, got -0.5"):
        bench.run(str(smollm_path), "ngram", ["gsm8k"], 1, 4, temperature=-0.5, progress=False)
