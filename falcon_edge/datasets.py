"""Prompt sets for tests and benchmarks, read from files in their published formats.

- ``mt-bench``: FastChat ``question.jsonl`` (``{"question_id", "category", "turns": [...]}``), first turns.
- ``humaneval``: OpenAI ``HumanEval.jsonl.gz`` (``{"task_id", "prompt", ...}``), asked as "complete this code".
- ``gsm8k``: ``test.jsonl`` (``{"question", "answer"}``), questions.

The default data directory is ``$FALCON_EDGE_DATA``, else ``shared/data`` in or beside the working directory
(a checkout with ``../shared`` next to it); any path to a file in one of these formats works too.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

DATASETS = {
    "mt-bench": "mt_bench/question.jsonl",
    "humaneval": "humaneval/HumanEval.jsonl.gz",
    "gsm8k": "gsm8k/test.jsonl",
}


def data_dir() -> Path:
    """Where the prompt sets live."""
    env = os.environ.get("FALCON_EDGE_DATA")
    if env:
        return Path(env)
    candidates = [Path.cwd() / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), candidates[-1])


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file (gzip-compressed when it ends in ``.gz``), each checked to be an object."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as e:  # JSONDecodeError; nesting deeper than the parser's stack
                    raise ValueError(f"{path}:{lineno}: not a JSON record ({type(e).__name__}: {str(e)[:80]})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: a record must be a JSON object, got {type(row).__name__}")
                rows.append(row)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:  # corrupt or truncated gzip, bytes that are not UTF-8
        raise ValueError(f"dataset file {path} cannot be read: {type(e).__name__}: {e}") from None
    if not rows:
        raise ValueError(f"dataset file {path} holds no records")
    return rows


def _prompt_of(name: str, row: dict, path: Path) -> str:
    if name == "mt-bench":
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns or not isinstance(turns[0], str):
            raise ValueError(f"{path}: mt-bench record without string 'turns': {str(row)[:80]}")
        return turns[0]
    if name == "humaneval":
        if not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}: humaneval record without a string 'prompt': {str(row)[:80]}")
        return "Complete the following Python function.\n\n" + row["prompt"]
    if not isinstance(row.get("question"), str):
        raise ValueError(f"{path}: gsm8k record without a string 'question': {str(row)[:80]}")
    return row["question"]


def load_prompts(name: str, n: int | None = None, path: str | os.PathLike[str] | None = None, first: int = 0) -> list[str]:
    """``n`` prompts of a set from its ``first`` (0-based), in file order.

    Args:
        name: ``"mt-bench"``, ``"humaneval"`` or ``"gsm8k"`` (the format of the file).
        n: how many (None: all from ``first`` on).
        path: a file in that format (default: the set under :func:`data_dir`).
        first: index of the first prompt taken, e.g. to benchmark on prompts that no tuning looked at.

    Raises:
        ValueError: unknown set name, an ``n`` below 1, a negative ``first``, a ``first`` past the set's end, or a
            file whose records do not have the set's schema.
        FileNotFoundError: the file does not exist.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: known datasets are {', '.join(DATASETS)}")
    if n is not None and n < 1:
        raise ValueError(f"number of prompts must be >= 1, got {n}")
    if first < 0:
        raise ValueError(f"first prompt must be >= 0, got {first}")
    file = Path(path) if path is not None else data_dir() / DATASETS[name]
    if not file.is_file():
        raise FileNotFoundError(f"dataset file {file} does not exist")
    rows = _read_jsonl(file)
    if first >= len(rows):
        raise ValueError(f"first prompt {first} is past the end of {file}, which holds {len(rows)} records")
    return [_prompt_of(name, r, file) for r in rows[first:first + n if n is not None else len(rows)]]
