"""Rolling log-likelihood of whole documents, exactly as lm-eval's `loglikelihood_rolling`.

Each document's tokens (no special tokens) are split into windows of at most the model's
context; the first window is prefixed by EOS so the first token is predicted too, and every
token is predicted exactly once. With stride < context, each later window predicts `stride`
new tokens with `context - stride` tokens of overlap as extra context (lm-eval's
`context_len = context - stride + 1`). The last window is filled up with as much preceding
context as fits, as lm-eval does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from components.hf_model import context_length
from components.shards import Document


def rolling_windows(tokens: list[int], prefix_token: int, max_len: int, context_len: int = 1) -> Iterator[tuple[list[int], int]]:
    """(model input, n) per window: the input's last n positions predict the next n tokens.

    Mirrors lm_eval.utils.get_rolling_token_windows + make_disjoint_window, with the
    context/continuation concatenated and cut to the model's input as HFLM does.
    """
    if not 1 <= context_len <= max_len:
        raise ValueError(f"context_len={context_len} must be within 1..{max_len}")
    if not tokens:
        return
    pred_len = max_len - context_len + 1
    first = min(max_len, len(tokens))
    yield [prefix_token] + tokens[: first - 1], first
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, pred_len)
        end = predicted + n
        yield tokens[end - max_len - 1 : end - 1], n
        predicted += n


@dataclass
class _Window:
    doc: int
    inputs: list[int]
    targets: list[int]  # the last len(targets) positions of inputs predict these


def _windows(docs_tokens: Iterable[list[int]], eos: int, max_len: int, stride: int) -> Iterator[_Window]:
    for d, tokens in enumerate(docs_tokens):
        end = 0
        for inputs, n in rolling_windows(tokens, eos, max_len, context_len=max_len - stride + 1):
            end += n
            yield _Window(d, inputs, tokens[end - n : end])


@dataclass
class Totals:
    nll: float = 0.0  # nats
    tokens: int = 0
    bytes: int = 0
    documents: int = 0
    chars: int = 0
    words: int = 0  # whitespace-separated

    def add(self, other: "Totals") -> None:
        self.nll += other.nll
        self.tokens += other.tokens
        self.bytes += other.bytes
        self.documents += other.documents
        self.chars += other.chars
        self.words += other.words

    def metrics(self) -> dict[str, float]:
        loss = self.nll / self.tokens if self.tokens else float("nan")
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if self.tokens else float("nan"),
            "bits_per_byte": self.nll / math.log(2) / self.bytes if self.bytes else float("nan"),
            "nll_nats": self.nll,
            "tokens": float(self.tokens),
            "bytes": float(self.bytes),
            "documents": float(self.documents),
            # tokenizer fertility; per word only where the text has words (spaces): a script
            # written without them (Chinese, Japanese, Thai) averages far more than 15 characters
            # per whitespace "word", and the figure would mean nothing
            "tokens_per_char": self.tokens / self.chars if self.chars else float("nan"),
            "tokens_per_word": self.tokens / self.words if self.words and self.chars / self.words <= 15 else float("nan"),
        }


@dataclass
class ScoreResult:
    total: Totals
    per_language: dict[str, Totals] = field(default_factory=dict)
    per_source: dict[str, Totals] = field(default_factory=dict)  # meta['source'], when documents carry one


def right_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows of different lengths as input_ids and attention_mask, both LongTensor
    [len(rows), longest], padded on the right with pad_id (mask 0 there)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.inference_mode()
def _score_batch(model, batch: list[_Window], device: torch.device, pad_id: int) -> list[float]:
    ids, mask = right_padded([w.inputs for w in batch], pad_id)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for i, w in enumerate(batch):
        n, length = len(w.targets), len(w.inputs)
        rows = logprobs[i, length - n : length]
        targets = torch.tensor(w.targets, device=rows.device)
        out.append(-rows.gather(1, targets[:, None]).double().sum().item())
    return out


def score_documents(
    model,
    tokenizer,
    documents: Iterable[Document],
    *,
    batch_size: int = 8,
    stride: int | None = None,
    device: torch.device | str = "cpu",
) -> ScoreResult:
    """Total NLL (nats), tokens, UTF-8 bytes and documents, overall, per meta['lang_hint'] and per
    meta['source']."""
    device = torch.device(device)
    max_len = context_length(model)
    stride = stride or max_len
    if stride > max_len:
        raise ValueError(f"evaluate.stride={stride} exceeds the model's context of {max_len} tokens; lower it")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; rolling log-likelihood needs one to open each document")
    model.eval()

    per_doc: list[Totals] = []
    langs: list[str | None] = []
    sources: list[str | None] = []

    def docs_tokens() -> Iterator[list[int]]:
        for doc in documents:
            tokens = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
            per_doc.append(Totals(tokens=len(tokens), bytes=len(doc.text.encode("utf-8")), documents=1,
                                  chars=len(doc.text), words=len(doc.text.split())))  # fmt: skip
            lang = doc.meta.get("lang_hint")
            langs.append(str(lang) if lang else None)
            sources.append(str(doc.meta["source"]) if doc.meta.get("source") else None)
            yield tokens

    batch: list[_Window] = []

    def flush() -> None:
        for w, nll in zip(batch, _score_batch(model, batch, device, pad_id=eos)):
            per_doc[w.doc].nll += nll
        batch.clear()

    for window in _windows(docs_tokens(), eos, max_len, stride):
        batch.append(window)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()

    result = ScoreResult(total=Totals())
    for totals, lang, source in zip(per_doc, langs, sources):
        result.total.add(totals)
        if lang is not None:
            result.per_language.setdefault(lang, Totals()).add(totals)
        if source is not None:
            result.per_source.setdefault(source, Totals()).add(totals)
    result.per_language = dict(sorted(result.per_language.items()))
    result.per_source = dict(sorted(result.per_source.items()))
    return result
