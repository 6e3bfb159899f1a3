"""The peers benchmark harness on SmolLM2, 2 prompts per set: it runs every method, parses each prompt set's
format, writes valid JSON and rebuilds the report. This is not a speed test: nothing here asserts a timing.

The llama.cpp-tool peers run only where bench/build_llama_tools.sh has built the tools (CI does not build them);
elsewhere their test is skipped with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from falcon_edge import EdgeFalcon, bench_report, llama_tools, peers
from falcon_edge.datasets import DATASETS
from falcon_edge.errors import ToolOutputError, ToolsNotFoundError

pytestmark = pytest.mark.model

IN_PROCESS = ["plain", "falcon", "llama-cpp-python", "llama-cpp-python-pld"]
TOOL_METHODS = ["plain", *(n for n, m in peers.METHODS.items() if m.tool)]
N_PROMPTS = 2
MAX_TOKENS = 12
# one thread: with two on two shared cores, ggml's thread barrier stalls whenever another job holds a core
N_THREADS = 1
HAND_WRITTEN = "# Benchmarks\n\nHand-written analysis that must survive.\n"


def _run(target: Path, methods: list[str], datasets: list[str]) -> dict:
    return peers.run(str(target), datasets, N_PROMPTS, MAX_TOKENS, n_threads=N_THREADS, methods=methods,
                     n_ctx=1024, commit="test", progress=False)


@pytest.fixture(scope="module")
def report(smollm_path) -> dict:
    return _run(smollm_path, IN_PROCESS, list(DATASETS))


def _check_method(report: dict, name: str) -> None:
    for ds, d in report["datasets"].items():
        m = d["methods"][name]
        assert m["tokens_per_s"] > 0, (ds, name, m)
        assert m["n_generated"] > 0, (ds, name, m)
        assert m["ratio_to_plain"] is not None, (ds, name, m)
        if peers.METHODS[name].speculative:
            assert m["tau"] is None or m["tau"] >= 1.0, (ds, name, m)
        else:
            assert m["tau"] is None and m["acceptance"] is None, (ds, name, m)


def test_in_process_peers_run_on_every_prompt_set(report):
    assert report["skipped"] == {}
    assert list(report["datasets"]) == list(DATASETS)
    for ds, d in report["datasets"].items():
        assert d["n_prompts"] == N_PROMPTS, ds
        assert all(r["n_prompt_tokens"] > 0 for r in d["rows"]), ds
        assert d["methods"]["plain"]["ratio_to_plain"] == pytest.approx(1.0)
    for name in IN_PROCESS:
        _check_method(report, name)
    assert report["falcon_drafter"].endswith("falcon-smollm2-135m-instruct.gguf")
    assert len(report["verify_cost"]) == peers.VERIFY_COST_N_MAX and report["verify_cost"][0] == pytest.approx(1.0)


def test_rows_count_the_tokens_decoded_after_the_prefill_alike(smollm_path):
    # every method's rate is decoded tokens over its decode timer: not the first token (the prefill's logits gave
    # it), but an end-of-generation token; our plain loop decodes one token per cycle, llama-cpp-python one per eval
    llm = EdgeFalcon(str(smollm_path), drafter=None, n_threads=N_THREADS, n_ctx=1024)
    s = peers.Settings(target=smollm_path, n_threads=N_THREADS, n_ctx=1024, max_tokens=MAX_TOKENS,
                       falcon_drafter=None, draft_model=None)
    peer = peers._LlamaCppPeer(s, llm._native_engine().is_eog, pld=False)
    finish = set()
    for prompt, max_tokens in (("Write a haiku about the sea.", MAX_TOKENS), ("Answer yes or no: is 7 prime?", 64)):
        tokens = llm.chat_tokens([{"role": "user", "content": prompt}])
        res = llm.generate(tokens, max_tokens=max_tokens, speculative=False)
        row, ref = peers._edge_row(res), peer.generate(tokens, max_tokens)
        finish.add(res.finish_reason)
        assert row["n_decoded"] == res.stats.n_cycles, (res.finish_reason, row, res.stats)
        assert (row["text"], row["n_decoded"]) == (ref["text"], ref["n_decoded"])
        assert row["tokens_per_s"] == pytest.approx(row["n_decoded"] / row["t_decode_s"])
    assert finish == {"length", "stop"}


def test_report_is_json_and_rebuilds_the_document(report, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    path = results / "peers-20260101-000000.json"
    path.write_text(json.dumps(report))
    assert json.loads(path.read_text())["datasets"].keys() == report["datasets"].keys()
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.parent.mkdir()
    doc.write_text(HAND_WRITTEN)
    for _ in range(2):  # a second rebuild replaces the section instead of adding one
        plots = bench_report.regenerate(results, doc, tmp_path / "docs" / "img")
    text = doc.read_text()
    assert text.startswith(HAND_WRITTEN)
    assert text.count(bench_report.BEGIN) == 1 and text.count(bench_report.END) == 1
    assert report["regime"] in text and "commit test" in text
    for name in IN_PROCESS:
        assert f"| {name} |" in text
    assert {p.name for p in plots} == {f"peers-speedup-{bench_report._slug(report['regime'])}.png", "verify-cost.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_a_set_that_ends_first_runs_and_reports_the_prompts_it_has(smollm_path):
    # HumanEval holds 164 problems: from the last, two requested prompts are one, indexed as in the file
    report = peers.run(str(smollm_path), ["humaneval"], 2, 4, n_threads=N_THREADS, methods=["plain"], n_ctx=1024,
                       commit="test", first_prompt=163, progress=False)
    d = report["datasets"]["humaneval"]
    assert (d["n_prompts"], [r["prompt_index"] for r in d["rows"]]) == (1, [163])
    assert "prompts per set: 1 (from prompt 163)," in bench_report._conditions(report)


def test_cli_writes_json_and_report(smollm_path, tmp_path):
    doc = tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "falcon_edge.cli", "bench", "--suite", "peers", "-m", str(smollm_path),
         "--methods", "plain,llama-cpp-python", "--dataset", "gsm8k", "--n-prompts", "1", "-n", "4", "-t", str(N_THREADS),
         "-o", str(tmp_path / "results"), "--report", str(doc), "--img-dir", str(tmp_path / "img")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "results").glob("peers-*.json")
    assert set(json.loads(path.read_text())["methods"]) == {"plain", "llama-cpp-python"}
    assert bench_report.BEGIN in doc.read_text()


def test_tool_peers_run_where_built(smollm_path):
    try:
        llama_tools.find_bin_dir()
    except ToolsNotFoundError as e:
        pytest.skip(f"llama.cpp tools not built (bash bench/build_llama_tools.sh): {e}")
    report = _run(smollm_path, TOOL_METHODS, ["humaneval"])
    # SmolLM2 has no smaller model of its vocabulary in the registry
    assert set(report["skipped"]) == {"spec-draft-simple"}
    assert "no registry LM" in report["skipped"]["spec-draft-simple"]
    for name in TOOL_METHODS:
        if name != "spec-draft-simple":
            _check_method(report, name)
    assert report["llama_bench"]["tokens_per_s"] > 0


def test_tool_report_parsers_read_the_tools_output():
    completion = ("common_perf_print:        load time =     101.20 ms\n"
                  "common_perf_print: prompt eval time =      40.00 ms /    20 tokens (    2.00 ms per token)\n"
                  "common_perf_print:        eval time =     500.00 ms /    10 runs   (   50.00 ms per token,    20.00 "
                  "tokens per second)\n")
    r = llama_tools.parse_completion(completion)
    assert (r.n_generated, r.tokens_per_s) == (10, pytest.approx(20.0))
    spec = ("decoded   40 tokens in    2.000 seconds, speed:   20.000 t/s\n\nn_draft   = 3\nn_predict = 40\n"
            "n_drafted = 30\nn_accept  = 24\naccept    = 80.000%\n")
    r = llama_tools.parse_speculative(spec)
    assert (r.n_generated, r.n_drafted, r.n_accepted, r.n_cycles) == (40, 30, 24, 16)
    with pytest.raises(ToolOutputError, match="n_drafted"):
        llama_tools.parse_speculative("decoded 4 tokens in 1.0 seconds")

