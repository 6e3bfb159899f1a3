"""Sampling at temperature > 0 keeps the target's distribution: speculative and plain samples are alike.

For each setting, N_SAMPLES seeded generations of 3 tokens run plainly and speculatively on the same target. The
first token comes from the prefill in both modes; tokens 1 and 2 come out of tree verification (recursive rejection
sampling), so their distributions are compared with a chi-square test of homogeneity. Each comparison has a
false-alarm rate of P_MIN (0.1%) when the distributions are equal; the seeds are fixed, so the test is deterministic.
"""

from __future__ import annotations

from collections import Counter

import pytest
from helpers.tiny_drafter import checkpoint_of, make_tiny_drafter
from scipy.stats import chi2_contingency

from falcon_edge import EdgeFalcon
from falcon_edge.convert import run as write_drafter
from falcon_edge.train.target_weights import read_target_meta

N_SAMPLES = 1500
P_MIN = 1e-3


@pytest.fixture(scope="module")
def prompt(tiny_target) -> list[int]:
    """The target's own greedy text, which settles into a loop: n-gram drafts of it are often accepted."""
    llm = EdgeFalcon(tiny_target.path, n_ctx=512, n_threads=2)
    return llm.tokenize("The") + llm.generate("The", max_tokens=200).tokens


def _samples(llm: EdgeFalcon, prompt: list[int], speculative: bool, seed0: int, **sampling):
    out, accepted = [], 0
    for i in range(N_SAMPLES):
        res = llm.generate(prompt, max_tokens=3, seed=seed0 + i, speculative=speculative, **sampling)
        out.append(tuple(res.tokens))
        accepted += res.stats.n_accepted
    return out, accepted


def _p_value(a: list[int], b: list[int]) -> float:
    counts_a, counts_b = Counter(a), Counter(b)
    # categories seen fewer than 10 times in both runs together are pooled, so expected counts stay >= 5
    common = [t for t in set(counts_a) | set(counts_b) if counts_a[t] + counts_b[t] >= 10]
    rows = [[counts_a[t] for t in common], [counts_b[t] for t in common]]
    rows[0].append(len(a) - sum(rows[0]))
    rows[1].append(len(b) - sum(rows[1]))
    if rows[0][-1] + rows[1][-1] == 0:
        rows = [r[:-1] for r in rows]
    return chi2_contingency(rows).pvalue


@pytest.fixture(scope="module")
def falcon_drafter(tiny_target, tmp_path_factory):
    meta = read_target_meta(tiny_target.path)
    model = make_tiny_drafter(tiny_target, meta, seed=11, block_size=2, n_layer=1)
    return write_drafter(checkpoint_of(model), tiny_target.path, tmp_path_factory.mktemp("s") / "d.gguf",
                         outtype="f32", progress=False)


@pytest.mark.parametrize(
    "drafter, sampling",
    [
        ("ngram", dict(temperature=1.0, top_k=8, top_p=1.0, min_p=0.0)),
        ("ngram", dict(temperature=0.7, top_k=40, top_p=0.8, min_p=0.05, repeat_penalty=1.1)),
        ("falcon", dict(temperature=1.0, top_k=6, top_p=0.95, min_p=0.0)),
    ],
)
def test_speculative_sampling_matches_plain(tiny_target, falcon_drafter, prompt, drafter, sampling):
    path = falcon_drafter if drafter == "falcon" else "ngram"
    llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=512, n_threads=2, tree_budget=6)
    plain, _ = _samples(llm, prompt, False, 0, **sampling)
    spec, accepted = _samples(llm, prompt, True, 10**6, **sampling)
    if drafter == "ngram":
        assert accepted > N_SAMPLES // 10, "too few accepted drafts: the acceptance path is not exercised"
    for pos in (1, 2):
        p = _p_value([s[pos] for s in plain if len(s) > pos], [s[pos] for s in spec if len(s) > pos])
        assert p > P_MIN, f"token {pos}: distributions differ (chi-square p = {p:.2e})"


def test_same_seed_same_output(tiny_target, prompt):
    llm = EdgeFalcon(tiny_target.path, drafter="ngram", n_ctx=512, n_threads=2, tree_budget=6)
    a = llm.generate(prompt, max_tokens=12, temperature=0.9, seed=42)
    b = llm.generate(prompt, max_tokens=12, temperature=0.9, seed=42)
    assert a.tokens == b.tokens
