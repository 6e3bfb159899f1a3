"""Result types of falcon_edge: what a generation returns and the speculative statistics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecStats:
    """Statistics of one generation.

    Attributes:
        mode: speculation mode used: ``"plain"``, ``"ngram"`` or ``"falcon"``.
        n_prompt: prompt tokens of the request.
        n_prefill: prompt tokens actually evaluated (the rest came from the KV cache of the last request).
        n_generated: tokens generated.
        n_cycles: target forward passes after the prefill (one per verification).
        n_drafted: draft tokens offered for verification (tree nodes below the roots).
        n_accepted: draft tokens accepted.
        n_drafted_ngram, n_accepted_ngram: the part of n_drafted and n_accepted offered by n-gram lookup (in mode
            ``"falcon"`` its branches are merged into the drafter's tree).
        n_draft_passes: drafter forward passes.
        drafter_joined: the drafter took part, fed with the target's features from the prefill on. False without
            a drafter, and where the engine found before the prefill that even the drafter's best case could not pay
            for this request on this device (its catch-up over the prompt and the target's work for its features
            counted): the request then costs what plain decoding costs, n-gram lookup aside.
        n_prompt_features: prompt tokens the target decoded with features on for the drafter (llama.cpp then
            computes an output row for each): those of the prompt chunks (``n_batch`` tokens) that hold the
            drafter's window over the prompt (its last 256 tokens at most, less what it kept from the last
            request); 0 where the drafter did not join.
        n_nodes_max: largest tree verified in one pass, root included (1 = plain decoding).
        n_head_rows: logits rows the path head computed (on a CPU the trees are decoded up to the final norm and
            the LM head runs only for the rows the acceptance walk reads; 0 when the decode gives every node's logits).
        verify_units: what the verifications cost by the device's verify-cost curve, in plain decoding steps: the sum
            over cycles of c(nodes verified) as the engine estimated it when it sized the tree, plus the path head's
            calls by their estimated cost (n_cycles when decoding plainly). A measure of the engine's choices that
            host speed noise does not reach.
        t_prefill_s, t_draft_s, t_verify_s, t_sample_s, t_total_s: seconds spent prefilling, drafting, in the
            target's verification decodes, in acceptance/sampling/KV commit (the path head's calls included), and in
            total.
        t_head_s: of t_sample_s, seconds in the path head's calls.
    """

    mode: str
    n_prompt: int
    n_prefill: int
    n_generated: int
    n_cycles: int
    n_drafted: int
    n_accepted: int
    n_drafted_ngram: int
    n_accepted_ngram: int
    n_draft_passes: int
    drafter_joined: bool
    n_prompt_features: int
    n_nodes_max: int
    n_head_rows: int
    verify_units: float
    t_prefill_s: float
    t_draft_s: float
    t_verify_s: float
    t_sample_s: float
    t_total_s: float
    t_head_s: float

    @property
    def tau(self) -> float:
        """Mean accepted length per target forward pass, **including** the bonus token (EAGLE convention)."""
        return (self.n_accepted + self.n_cycles) / self.n_cycles if self.n_cycles else 1.0

    @property
    def alpha(self) -> float:
        """Share of generated tokens that were accepted drafts (Falcon's acceptance rate α)."""
        return self.n_accepted / self.n_generated if self.n_generated else 0.0

    @property
    def draft_acceptance(self) -> float:
        """Accepted draft tokens over drafted tokens (low for wide trees: siblings cannot all be accepted)."""
        return self.n_accepted / self.n_drafted if self.n_drafted else 0.0

    @property
    def decode_seconds(self) -> float:
        """Seconds after the prefill."""
        return max(self.t_total_s - self.t_prefill_s, 1e-9)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of decoding (prefill excluded)."""
        return self.n_generated / self.decode_seconds

    def as_dict(self) -> dict:
        """All fields plus tau, alpha, draft_acceptance and tokens_per_second."""
        d = dict(self.__dict__)
        d.update(
            tau=self.tau,
            alpha=self.alpha,
            draft_acceptance=self.draft_acceptance,
            tokens_per_second=self.tokens_per_second,
        )
        return d


@dataclass(frozen=True)
class GenerationResult:
    """What :meth:`falcon_edge.EdgeFalcon.generate` returns.

    Attributes:
        text: generated text (cut before a stop string; undecodable bytes replaced).
        tokens: generated token ids (an end-of-generation token is not included).
        finish_reason: ``"stop"`` (end-of-generation token or stop string), ``"length"`` (max_tokens or the
            context is full) or ``"cancelled"`` (a streaming consumer stopped early).
        stats: speculative statistics.
    """

    text: str
    tokens: list[int]
    finish_reason: str
    stats: SpecStats

    @property
    def openai_finish_reason(self) -> str:
        """``finish_reason`` as the OpenAI API spells it: a stream its consumer stopped ends with ``"stop"``."""
        return "stop" if self.finish_reason == "cancelled" else self.finish_reason

    @property
    def usage(self) -> dict:
        """The OpenAI ``usage`` object: prompt, completion and total tokens."""
        n_prompt, n_completion = self.stats.n_prompt, len(self.tokens)
        return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}


@dataclass(frozen=True)
class StreamChunk:
    """One piece of a streamed generation (:meth:`falcon_edge.EdgeFalcon.generate_stream`).

    Attributes:
        text: newly verified text (may be empty; UTF-8 sequences split across steps are joined).
        result: None until the last chunk, which carries the whole :class:`GenerationResult`.
    """

    text: str
    result: GenerationResult | None = None
