"""Tokenizer fertility per language and per script: how many tokens a language's text costs.

Definitions match the evaluate step's (components/evaluate/scoring.py `Totals.metrics`), so
the tokenizer step's train-side figures and the evaluate step's held-out figures compare:
bytes are UTF-8 bytes, characters are code points, words are whitespace-separated and
tokens_per_word is left out where a group averages more than 15 characters per "word"
(a script written without spaces: Chinese, Japanese, Thai). EOS tokens are not counted.

A document's language is its `lang_hint` (the label its source gave, which the evaluate
step groups by), else the `lang` the clean step detected, else "und"; its script is the
clean step's `script`, else `detect_script` of its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components.clean.langid import UNDETERMINED, detect_script

MAX_CHARS_PER_WORD = 15  # components/evaluate/scoring.py applies the same cut to tokens_per_word


@dataclass
class Counts:
    documents: int = 0
    bytes: int = 0
    chars: int = 0
    words: int = 0
    tokens: int = 0  # EOS excluded

    def metrics(self) -> dict[str, float]:
        """bytes_per_token, tokens_per_char and (where the text has spaced words) tokens_per_word."""
        out = {
            "bytes_per_token": self.bytes / self.tokens if self.tokens else 0.0,
            "tokens_per_char": self.tokens / self.chars if self.chars else 0.0,
        }
        if self.words and self.chars / self.words <= MAX_CHARS_PER_WORD:
            out["tokens_per_word"] = self.tokens / self.words
        return out


@dataclass
class Fertility:
    """Counts per language and per script, filled one document at a time."""

    languages: dict[str, Counts] = field(default_factory=dict)
    scripts: dict[str, Counts] = field(default_factory=dict)

    def add(self, text: str, meta: dict, tokens: int) -> None:
        """One document of `tokens` tokens (EOS excluded) with its metadata."""
        lang = str(meta.get("lang_hint") or meta.get("lang") or UNDETERMINED)
        script = str(meta.get("script") or detect_script(text))
        size = len(text.encode("utf-8"))
        words = len(text.split())
        for group in (self.languages.setdefault(lang, Counts()), self.scripts.setdefault(script, Counts())):
            group.documents += 1
            group.bytes += size
            group.chars += len(text)
            group.words += words
            group.tokens += tokens

    def metrics(self) -> dict[str, float]:
        """Flat metrics: `<figure>_lang_<code>` and `<figure>_script_<ISO 15924>`, as the clean step's
        `kept_lang_<code>` and the evaluate step's `bits_per_byte_<code>` are named. Codes are used
        as given; one MLflow refuses (`sr@latin`) is renamed where metrics are logged
        (components/mlflow_runs.py `mlflow_key`, the original kept in the run's name table)."""
        out: dict[str, float] = {}
        for kind, groups in (("lang", self.languages), ("script", self.scripts)):
            for name in sorted(groups):
                for figure, value in groups[name].metrics().items():
                    out[f"{figure}_{kind}_{name}"] = value
        return out
