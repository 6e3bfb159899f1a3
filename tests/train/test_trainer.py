"""The training loop end to end on a tiny target: features → fit → checkpoint/resume → GGUF that loads."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
import torch

from falcon_edge import EdgeFalcon, gguf_schema
from falcon_edge.cli import main
from falcon_edge.train import data, features, trainer
from falcon_edge.train.csgd import CSGDConfig


def test_draft_vocab_by_frequency_and_coverage():
    seqs = [SimpleNamespace(tokens=np.array([5, 5, 5, 7, 7, 9, 1]), loss_mask=np.array([1, 1, 1, 1, 1, 1, 0]))]
    counts = trainer.token_counts(seqs, 12)
    assert counts[5] == 3 and counts[1] == 0, "prompt tokens do not count"
    d2t = trainer.choose_draft_vocab(counts, 4)
    assert list(d2t) == [5, 7, 9, 0], "most frequent first, unseen ids by id"
    held = [SimpleNamespace(tokens=np.array([5, 7, 11, 11]), loss_mask=np.array([1, 1, 1, 0]))]
    assert trainer.coverage(d2t, held) == pytest.approx(2 / 3)


def test_batches_cover_every_sequence_once():
    seqs = [SimpleNamespace(tokens=np.zeros(n)) for n in [5, 50, 7, 30, 12, 3, 40]]
    batches = trainer.make_batches(seqs, 64, random.Random(0))
    assert sorted(j for b in batches for j in b) == list(range(len(seqs)))
    for b in batches:
        assert len(b) == 1 or max(len(seqs[j].tokens) for j in b) * len(b) <= 64


def test_every_rank_takes_the_same_number_of_batches_even_with_fewer_batches_than_ranks():
    for n_batches, world in ((7, 2), (5, 4), (1, 4), (2, 8), (3, 3)):
        shares = [trainer.rank_batches(list(range(n_batches)), rank, world) for rank in range(world)]
        assert [len(share) for share in shares] == [-(-n_batches // world)] * world, (n_batches, world)
        assert sorted({b for share in shares for b in share}) == list(range(n_batches))


def test_lr_schedule():
    cfg = trainer.TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert trainer.lr_at(0, 100, cfg) == pytest.approx(1e-4)
    assert trainer.lr_at(9, 100, cfg) == pytest.approx(1e-3)
    assert trainer.lr_at(100, 100, cfg) == pytest.approx(1e-4)


def test_auto_autocast_takes_bf16_on_a_cpu_only_with_amx():
    cpu = torch.device("cpu")
    assert trainer.resolve_amp("auto", cpu, {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}) == "bf16"
    assert trainer.resolve_amp("auto", cpu, {"avx512f", "avx512_bf16"}) == "off", "AVX512-BF16 alone ran slower"
    assert trainer.resolve_amp("auto", cpu, set()) == "off"
    assert trainer.resolve_amp("bf16", cpu, set()) == "bf16" and trainer.resolve_amp("off", cpu, {"amx_bf16"}) == "off"
    with pytest.raises(ValueError, match="fp8"):
        trainer.resolve_amp("fp8", cpu)


@pytest.fixture(scope="module")
def tiny_features(tiny_path, tmp_path_factory):
    llm = EdgeFalcon(tiny_path, n_ctx=512)
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "one", "two", "three", "hello", "world"]
    convs = []
    for i in range(24):
        q = " ".join(rng.choice(words) for _ in range(6))
        convs.append({"source": "t", "messages": [{"role": "user", "content": q},
                                                  {"role": "assistant", "content": " ".join(sorted(q.split()))}]})
    out = tmp_path_factory.mktemp("feat") / "features"
    features.extract(llm, data.encode_all(convs, llm), out, shard_size=8, progress=False)
    return out


def _config(**kw):
    base = {"n_ff": 64, "draft_vocab": 200, "epochs": 2, "tokens_per_batch": 256, "lr": 3e-3, "warmup_steps": 2, "save_every": 3,
                "amp": "off", "heldout": 0.2, "csgd": CSGDConfig()}
    base.update(kw)
    return trainer.TrainConfig(**base)


def _selected(report: dict) -> dict:
    """The validation whose drafter fit exported."""
    return next(h for h in report["validation"] if h["step"] == report["selected"]["step"])


def test_fit_converts_and_the_drafter_loads(tiny_path, tiny_features, tmp_path):
    out = tmp_path / "drafter.gguf"
    report = trainer.fit(tiny_path, tiny_features, tmp_path / "run", _config(), out_gguf=out, outtype="f32", progress=False)
    assert report["steps"] > 0 and report["epochs_done"] == 2
    assert [h["epoch"] for h in report["validation"]] == [1, 2]
    assert out.is_file() and report["gguf"]["bytes"] == out.stat().st_size
    card_text = out.with_suffix(".md").read_text()
    assert card_text.startswith("# drafter.gguf\n") and f"- {report['steps']} steps, 2 full epochs" in card_text
    assert f"{os.cpu_count()} CPU cores" in card_text and f"epoch {report['selected']['epoch']} at step" in card_text
    assert json.loads((tmp_path / "run" / "report.json").read_text())["steps"] == report["steps"]
    ckpt = torch.load(tmp_path / "run" / "drafter.pt", weights_only=False)
    assert ckpt["config"]["draft_vocab_size"] == 200 and ckpt["state_dict"]["d2t"].shape == (200,)
    # the exported drafter is the best validation's, with that validation's calibration in the file
    best = max(report["validation"], key=lambda h: h["alpha"])
    assert report["selected"] == {"epoch": best["epoch"], "step": best["step"], "alpha": best["alpha"]}
    assert [h["kept"] for h in report["validation"]][0] and ckpt["accept_rates"] == best["accept_rates"]
    assert gguf.GGUFReader(out).get_field(gguf_schema.KEY_ACCEPT_RATES).contents() == pytest.approx(best["accept_rates"])
    llm = EdgeFalcon(tiny_path, drafter=out, n_ctx=512, tree_budget=4)
    res = llm.generate("alpha beta", max_tokens=8, temperature=0)
    plain = EdgeFalcon(tiny_path, n_ctx=512).generate("alpha beta", max_tokens=8, temperature=0)
    assert res.tokens == plain.tokens, "lossless with the trained drafter"
    from falcon_edge.train import card

    text = card.render(report, name="d.gguf", target_name="tiny", hardware="test",
                       acceptance={"tree_budget": 4, "max_tokens": 8, "prompts": ["x"], "tau": 1.5, "alpha": 0.3,
                                   "draft_acceptance": 0.2})
    assert "| 1 |" in text and "τ (accepted + bonus per cycle) 1.50" in text


@pytest.fixture(scope="module")
def uneven_features(tmp_path_factory):
    """A feature directory of 200 random conversations of 20 to 160 tokens, H 64 as the tiny target, for schedules
    whose batch count changes from one epoch's shuffle to the next."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("uneven")
    encoded = []
    for _ in range(200):
        n = int(rng.integers(20, 160))
        mask = np.zeros(n, np.uint8)
        mask[n // 3:] = 1
        encoded.append(data.Encoded(rng.integers(3, 320, n).astype(np.int32), mask, "t"))
    index = features.open_index(out, features.fingerprint(encoded), 64, 200, len(encoded), None)
    feats = [rng.standard_normal((len(e.tokens), 64)).astype(np.float16) for e in encoded]
    features.write_shard(out, index, 0, feats, [e.tokens for e in encoded], [e.loss_mask for e in encoded])
    return out


def test_every_epoch_runs_all_of_its_own_batches(tiny_path, uneven_features, tmp_path):
    # each epoch batches its own shuffle: the step schedule counts every epoch's batches, not the first one's twice
    train_seqs, _ = trainer.split_heldout(features.load_sequences(uneven_features), 0.2, 0)

    def n_batches(tpb, epoch):
        return len(trainer.make_batches(train_seqs, tpb, random.Random(epoch)))

    tpb = next(t for t in range(400, 1200, 20) if n_batches(t, 1) > n_batches(t, 0))
    report = trainer.fit(tiny_path, uneven_features, tmp_path / "run", _config(tokens_per_batch=tpb, save_every=1000),
                         progress=False)
    assert report["epochs_done"] == 2 and [h["epoch"] for h in report["validation"]] == [1, 2]
    assert report["steps"] == n_batches(tpb, 0) + n_batches(tpb, 1)


def test_resume_continues_from_the_checkpoint(tiny_path, tiny_features, tmp_path):
    full = trainer.fit(tiny_path, tiny_features, tmp_path / "a", _config(), progress=False)
    trainer.fit(tiny_path, tiny_features, tmp_path / "b", _config(), progress=False, max_steps=3)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3
    resumed = trainer.fit(tiny_path, tiny_features, tmp_path / "b", _config(), progress=False)
    assert resumed["steps"] == full["steps"]
    assert resumed["epochs_done"] == 2


def test_features_of_another_target_are_refused(tiny_target, tiny_features, tmp_path):
    from helpers.tiny_target import write_tiny_llama_gguf

    other = write_tiny_llama_gguf(tmp_path / "wide.gguf", n_embd=96, n_head=4, seed=3)
    with pytest.raises(ValueError, match="extracted from another model"):
        trainer.fit(other.path, tiny_features, tmp_path / "run", _config(), progress=False)


def test_fit_without_features_says_to_prepare_first(tiny_path, tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["train", "fit", "--target", str(tiny_path), "--work", str(work)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"falcon-edge: error: no features in {work}: run `falcon-edge train prepare` first"
    assert not work.exists()


def test_init_from_starts_at_the_earlier_weights(tiny_path, tiny_features, tmp_path):
    first = trainer.fit(tiny_path, tiny_features, tmp_path / "a", _config(), progress=False)
    # zero steps from the earlier weights: the held-out readout is that of the earlier run's exported (best) drafter
    again = trainer.fit(tiny_path, tiny_features, tmp_path / "b", _config(), progress=False, max_steps=0,
                        init_from=tmp_path / "a" / "drafter.pt")
    assert again["steps"] == 0
    assert again["validation"][-1]["top1_per_depth"] == _selected(first)["top1_per_depth"]
    a = torch.load(tmp_path / "a" / "drafter.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "drafter.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    with pytest.raises(ValueError, match="another drafter shape"):
        trainer.fit(tiny_path, tiny_features, tmp_path / "c", _config(n_ff=32), progress=False, max_steps=0,
                    init_from=tmp_path / "a" / "drafter.pt")


def test_init_from_a_drafter_gguf_takes_its_weights_and_draft_vocabulary(tiny_path, tiny_features, tmp_path):
    first = trainer.fit(tiny_path, tiny_features, tmp_path / "a", _config(), out_gguf=tmp_path / "a.gguf",
                        outtype="f32", progress=False)
    again = trainer.fit(tiny_path, tiny_features, tmp_path / "b", _config(), progress=False, max_steps=0,
                        init_from=tmp_path / "a.gguf")
    assert again["validation"][-1]["top1_per_depth"] == _selected(first)["top1_per_depth"]
    a = torch.load(tmp_path / "a" / "drafter.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "drafter.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    assert torch.equal(a["d2t"], b["d2t"])
    assert all(torch.allclose(a[key], b[key], rtol=0, atol=1e-6) for key in a), "f32 GGUF keeps the weights"
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        trainer.fit(tiny_path, tiny_features, tmp_path / "c", _config(), progress=False, max_steps=0,
                    init_from=tmp_path / "missing.gguf")


def test_a_continuation_from_the_command_line_defaults_to_the_gentler_learning_rate(tiny_path, tiny_features, tmp_path):
    args = ["train", "fit", "--target", str(tiny_path), "--extra-features", str(tiny_features), "--n-ff", "64",
            "--draft-vocab", "200", "--epochs", "1", "--tokens-per-batch", "256", "--warmup", "2", "--amp", "off",
            "--threads", "1"]
    assert main([*args, "--work", str(tmp_path / "a"), "--out", str(tmp_path / "a.gguf"), "--outtype", "f32"]) == 0
    assert main([*args, "--work", str(tmp_path / "b"), "--init-from", str(tmp_path / "a.gguf")]) == 0
    assert main([*args, "--work", str(tmp_path / "c"), "--init-from", str(tmp_path / "a.gguf"), "--lr", "2e-3"]) == 0
    lrs = [json.loads((tmp_path / w / "report.json").read_text())["train"]["lr"] for w in "abc"]
    assert lrs == [trainer.TrainConfig.lr, trainer.LR_CONTINUE, 2e-3]


def _torchrun_fit(tiny_path, features_dir, work, out, *extra):
    """`falcon-edge train fit` under torchrun with 2 CPU ranks (gloo), as docs/training.md gives it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "falcon_edge.cli", "train", "fit", "--target", str(tiny_path), "--work", str(work),
           "--extra-features", str(features_dir), "--out", str(out), "--outtype", "f32", "--n-ff", "64",
           "--draft-vocab", "200", "--lr", "3e-3", "--warmup", "2", "--amp", "off", "--threads", "1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a rank left waiting in an all-reduce hangs: the timeout turns that into a failure
    return subprocess.run(cmd, cwd=work.parent, env=env, capture_output=True, text=True, timeout=240)


def test_two_ranks_under_torchrun_take_equal_shares(tiny_path, tiny_features, tmp_path):
    train_seqs, _ = trainer.split_heldout(features.load_sequences(tiny_features), trainer.TrainConfig().heldout,
                                          trainer.TrainConfig().seed)
    # a batch size that gives an odd number of batches: one rank would run out first without the wrap-around
    counts = {t: len(trainer.make_batches(train_seqs, t, random.Random(0))) for t in (256, 320, 384, 192, 448, 128)}
    tpb, n_batches = next((t, n) for t, n in counts.items() if n % 2)
    assert [len(trainer.rank_batches(list(range(n_batches)), r, 2)) for r in (0, 1)] == [(n_batches + 1) // 2] * 2
    out = tmp_path / "ddp.gguf"
    run = _torchrun_fit(tiny_path, tiny_features, tmp_path / "run", out, "--epochs", "3", "--tokens-per-batch", str(tpb))
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["steps"] == 3 * ((n_batches + 1) // 2), "each rank takes half an epoch's batches per epoch"
    assert [h["epoch"] for h in report["validation"]] == [1, 2, 3]
    llm = EdgeFalcon(tiny_path, drafter=out, n_ctx=512, tree_budget=4)
    plain = EdgeFalcon(tiny_path, n_ctx=512).generate("alpha beta", max_tokens=8, temperature=0)
    assert llm.generate("alpha beta", max_tokens=8, temperature=0).tokens == plain.tokens


def test_two_ranks_stop_together_on_a_time_budget(tiny_path, tiny_features, tmp_path):
    run = _torchrun_fit(tiny_path, tiny_features, tmp_path / "run", tmp_path / "ddp.gguf", "--epochs", "100000",
                        "--tokens-per-batch", "128", "--time-budget", "4")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert 10 <= report["steps"] and report["epochs_done"] < 100000
    assert report["wall_s"] < 30


def test_train_all_from_the_command_line_writes_a_drafter_and_its_card(tiny_path, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "cli-drafter.gguf"
    args = ["train", "all", "--target", str(tiny_path), "--work", str(work), "--tokens", "3000", "--llama-threads", "1",
            "--n-ff", "64", "--draft-vocab", "200", "--epochs", "1", "--tokens-per-batch", "256", "--warmup", "2",
            "--outtype", "f32", "--out", str(out)]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert (work / "features" / features.INDEX).is_file() and (work / "mix.json").is_file()
    assert out.with_suffix(".md").read_text().startswith("# cli-drafter.gguf\n")
    spec_llm = EdgeFalcon(tiny_path, drafter=out, n_ctx=512, tree_budget=4)
    spec = spec_llm.generate("alpha beta", max_tokens=8, temperature=0)
    plain = EdgeFalcon(tiny_path, n_ctx=512).generate("alpha beta", max_tokens=8, temperature=0)
    assert spec.stats.n_drafted > 0 and spec.tokens == plain.tokens
