"""Training conversations for a drafter: the allowed sources, the mix, the chat template and the loss mask.

A training set is a JSONL file, one conversation per line:

    {"source": "gsm8k-train", "messages": [{"role": "user", "content": "..."},
                                            {"role": "assistant", "content": "..."}]}

`source` is free text (it names where the record came from; the mix is counted by it). Messages alternate
as the chat template expects; an optional leading "system" message is kept. Assistant content may be
`null` in a freshly built mix: such records can only be answered by the target itself
(falcon_edge.train.self_distill), and encode() refuses them.

Only training material is read (../shared/data): GSM8K train, the Alpaca demo set and seed tasks,
AlpacaEval instructions with their GPT-4 outputs (without the 80 `vicuna` instructions, which are
Vicuna-bench), ShareGPT first-turn prompts (no replies: only the target's own answers can complete them).
MT-Bench, HumanEval, GSM8K test and Vicuna-bench are never read here.

Encoding renders the conversation with the target's chat template (llama.cpp's
`tokenizer.chat_template`), or with the plain completion fallback `role: content` when the target has
none (logged, and recorded in the feature index). Tokens of assistant turns get loss mask 1, everything
else 0.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("falcon_edge.train")

ROLES = ("system", "user", "assistant")

# source name -> (relative path, reader); every reader yields (user prompt, fixed response or None)
ALLOWED_SOURCES = {
    "gsm8k-train": "gsm8k/train.jsonl",
    "alpaca-demo": "alpaca/alpaca_en_demo.json",
    "alpaca-seed": "alpaca/seed_tasks.jsonl",
    "alpaca-eval-gpt4": "alpaca_eval/gpt4_model_outputs.json",
    "sharegpt-prompts": "sharegpt/ShareGPT_V3_filtered_1000.json",
}
# evaluation material: refused by name wherever a path is given
FORBIDDEN_PARTS = ("mt_bench", "humaneval", "vicuna", "gsm8k/test")


class DatasetError(ValueError):
    """A training set that cannot be used: wrong schema, no records, a forbidden file."""


@dataclass
class Encoded:
    """One tokenized conversation.

    Attributes:
        tokens: `[n]` token ids of the rendered conversation.
        loss_mask: `[n]` 1 on assistant tokens, 0 elsewhere.
        source: the record's source name.
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    source: str


# ---- the allowed sources ------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike) -> list:
    """The records of a JSONL file. Lines end at "\n" only: str.splitlines() also breaks at U+2028 and its kin,
    which JSON leaves unescaped (a target's answer held one)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_json_or_jsonl(path: Path) -> list:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    return json.loads(path.read_text(encoding="utf-8"))


def _pairs(name: str, rows: list) -> Iterable[tuple[str, str | None]]:
    """(prompt, response or None) of each record of an allowed source."""
    for row in rows:
        if name == "gsm8k-train":
            # the answer's calculator annotations <<a*b=c>> are not natural text: drop them
            answer = row["answer"]
            while "<<" in answer and ">>" in answer.split("<<", 1)[1]:
                head, rest = answer.split("<<", 1)
                answer = head + rest.split(">>", 1)[1]
            yield row["question"], answer.replace("#### ", "The answer is ")
        elif name == "alpaca-demo":
            prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            yield prompt, row["output"]
        elif name == "alpaca-seed":
            for inst in row["instances"]:
                prompt = row["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
                yield prompt, inst["output"]
        elif name == "alpaca-eval-gpt4":
            if row.get("dataset") == "vicuna":  # the Vicuna-bench questions: an evaluation set
                continue
            yield row["instruction"], row["output"]
        elif name == "sharegpt-prompts":
            turns = row.get("conversations") or []
            if turns and turns[0].get("from") == "human" and turns[0].get("value", "").strip():
                yield turns[0]["value"], None


def read_source(name: str, data_dir: str | os.PathLike) -> list[dict]:
    """All records of one allowed source as conversations (assistant content None when it has no response).

    Raises:
        DatasetError: if the source is unknown or its file is missing.
    """
    if name not in ALLOWED_SOURCES:
        raise DatasetError(f"unknown training source {name!r}; allowed: {', '.join(ALLOWED_SOURCES)}")
    path = Path(data_dir) / ALLOWED_SOURCES[name]
    if not path.is_file():
        raise DatasetError(f"training source {name} expects {path}, which does not exist")
    out = []
    for prompt, response in _pairs(name, _read_json_or_jsonl(path)):
        if prompt.strip() and (response is None or response.strip()):
            out.append({"source": name, "messages": [{"role": "user", "content": prompt.strip()},
                                                     {"role": "assistant", "content": response}]})
    return out


def build_mix(data_dir: str | os.PathLike, counts: dict[str, int], *, seed: int = 0) -> list[dict]:
    """A shuffled training mix: counts[name] records of each source (-1 or more than available: all).

    Returns:
        conversations in the dataset schema; log lines record the mix.
    """
    rng = random.Random(seed)
    mix = []
    for name, n in counts.items():
        rows = read_source(name, data_dir)
        rng.shuffle(rows)
        take = rows if n < 0 else rows[:n]
        log.info("mix: %s %d of %d records", name, len(take), len(rows))
        mix.extend(take)
    rng.shuffle(mix)
    return mix


def mix_summary(conversations: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Per source: records, and how many have a response regenerated by the target."""
    out: dict[str, dict[str, int]] = {}
    for c in conversations:
        row = out.setdefault(c["source"], {"records": 0, "regenerated": 0})
        row["records"] += 1
        row["regenerated"] += int(bool(c.get("regenerated")))
    return out


# ---- the dataset file ---------------------------------------------------------------------------


def validate_conversation(record, where: str = "record", *, need_response: bool = True) -> dict:
    """Check one record against the schema and return it.

    Raises:
        DatasetError: naming `where` and what is wrong.
    """
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object with 'messages', got {type(record).__name__}")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise DatasetError(f"{where}: message {j} must have a role in {ROLES}, got {m!r:.80}")
        content = m.get("content")
        if content is None and m["role"] == "assistant" and not need_response:
            continue
        if not isinstance(content, str):
            raise DatasetError(f"{where}: message {j} ({m['role']}) content must be a string, got {type(content).__name__}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DatasetError(f"{where}: no assistant message, nothing to train on")
    if not isinstance(record.get("source", ""), str):
        raise DatasetError(f"{where}: 'source' must be a string")
    return record


def _check_not_eval(path: Path) -> None:
    text = str(path.resolve()).lower()
    for part in FORBIDDEN_PARTS:
        if part in text:
            raise DatasetError(f"{path} looks like evaluation data ({part}); drafters are never trained on it")


def load_conversations(path: str | os.PathLike, *, need_response: bool = True) -> list[dict]:
    """Read and validate a JSONL training set.

    Raises:
        DatasetError: a missing file, evaluation data, invalid JSON, a record with the wrong schema, or no records.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"training set {path} does not exist")
    _check_not_eval(path)
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:
                    raise DatasetError(f"{path}:{lineno}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
                records.append(validate_conversation(record, f"{path}:{lineno}", need_response=need_response))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    if not records:
        raise DatasetError(f"training set {path} is empty: no conversations")
    return records


def save_conversations(conversations: Sequence[dict], path: str | os.PathLike) -> None:
    """Write a JSONL training set atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations)
    os.replace(tmp, path)


# ---- encoding -----------------------------------------------------------------------------------


def encode(record: dict, template, tokenize: Callable[[str], Sequence[int]], *, max_len: int = 1024) -> Encoded:
    """Render one conversation with the template, tokenize, and mask assistant tokens.

    Every assistant turn's tokens are those the rendering adds between the prefix rendered with the
    generation prompt and the prefix that includes the turn.

    Args:
        record: a validated conversation (every assistant content a string).
        template: a falcon_edge.chat_template.ChatTemplate.
        tokenize: text -> token ids (special tokens parsed; no BOS beyond what the template writes, as chat() decodes).
        max_len: truncate to this many tokens.

    Raises:
        DatasetError: if an assistant response is missing.
    """
    validate_conversation(record)
    messages = record["messages"]
    tokens: list[int] = []
    mask: list[int] = []
    done_text = ""
    for j, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = template.render(messages[:j], add_generation_prompt=True)
        full = template.render(messages[: j + 1], add_generation_prompt=False)
        if not prefix.startswith(done_text) or not full.startswith(prefix):
            raise DatasetError(f"the chat template does not render message {j} as an extension of the previous ones")
        for text, is_assistant in ((prefix[len(done_text):], False), (full[len(prefix):], True)):
            ids = list(tokenize(text))
            tokens.extend(ids)
            mask.extend([int(is_assistant)] * len(ids))
        done_text = full
    return Encoded(np.asarray(tokens[:max_len], dtype=np.int32), np.asarray(mask[:max_len], dtype=np.uint8),
                   record.get("source", ""))


def engine_tokenizer(llm) -> Callable[[str], Sequence[int]]:
    """The tokenize function for encode(): special tokens parsed and no BOS added, as EdgeFalcon.chat_tokens tokenizes
    the prompt chat() decodes (a BOS the template writes is its text; the vocabulary's add_bos_token would double it)."""
    eng = llm._native_engine()
    return lambda text: eng.tokenize(text, False, True) if text else []


def encode_all(conversations: Sequence[dict], llm, *, max_len: int = 1024) -> list[Encoded]:
    """encode() every conversation with the target's template and tokenizer (logs the fallback)."""
    if llm.template.is_fallback:
        log.warning("the target has no chat template: using the plain completion format 'role: content'")
    out = []
    for c in conversations:
        e = encode(c, llm.template, engine_tokenizer(llm), max_len=max_len)
        if e.loss_mask.sum() > 0:
            out.append(e)
    if not out:
        raise DatasetError("no conversation has assistant tokens within max_len")
    return out
