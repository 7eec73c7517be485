"""PII that only context tells apart from other numbers: IPv4 addresses and phone numbers.

Both read the folded view (`pii_fold.fold`) and both look at the label right before a number
(`_label_pattern`): a numbering label makes a dotted quad a version or section number, an ID
label makes a phone-shaped number an order, invoice or account number.

IPv4 — an address only where it reads as one. A dotted quad that `ipaddress` accepts is NOT
masked when:
- a label for numbered things stands right before it (up to 3 punctuation characters and an
  optional "no."/"#" between): version, v, release, build, revision, patch, firmware, driver,
  section, §, chapter, clause, article, paragraph, table, figure, page, appendix, step, rule,
  item, OID, RFC/ISO/DIN/IEC, ... in English, German, French, Spanish, Portuguese, Italian,
  Russian, Chinese, Japanese, Korean, Hindi, Bengali and Arabic (`_NUMBERING_WORDS`); long
  labels also end compounds (Treiberversion);
- it is glued to letters (v1.2.3.4, 1.2.3.4rc1, 1.2.3.4-beta) or followed by a Chinese/
  Japanese/Korean section suffix (3.1.4.1节);
- it follows such a non-address in a list ("versions 1.2.3.4, 1.2.3.5 and 1.2.3.6"): a dotted
  number separated from the previous dotted number only by a comma, slash, dash or a short
  connective (and/or/to/und/et/y/и/和/और/و, ...) takes that number's verdict.
Longer dotted numbers (OIDs such as 1.3.6.1.4.1.311, 2.10.0.1.5) never match, nor do quads
with a part above 255 or a leading zero (`ipaddress` refuses 01.02.03.04); dotted dates have
three parts (15.01.2023) and are never quads. "IP 10.0.0.1", "server 192.168.1.20" and a bare
quad are masked.

Phones — Google's libphonenumber (PyPI `phonenumbers`), not our own patterns. The regions a
national number is read in come from the document's language (`doc.meta["lang"]`, set by the
langid stage): `phone_regions.LANGUAGE_REGIONS`, generated from CLDR (the territories where the
language is official with 1M+ speakers, most speakers first), cut to
`PiiConfig.phone_max_regions`; a language with no regions ("und", eo, ...) uses
`PiiConfig.phone_default_regions`. International numbers (+CC ...) are found in any region.
Cost: a cheap regex (`_PHONE_HINT`: 7+ digits in a phone-shaped run) finds candidate spots;
only a window of ±40 characters around each is given to `PhoneNumberMatcher`, once per region,
so documents without such digit runs never reach the library. A candidate is masked when
- libphonenumber says it is a valid number for its region (number plan, length, prefix), or
- it is written in exactly the grouping libphonenumber formats that number in (≥ 2 groups):
  "07700 900123", "(555) 123-4567" — the ranges set aside for fiction are not valid
  numbers, but in prose they stand for a phone number and are masked like one;
and it is not labelled as another kind of number: order, invoice, ISBN, tracking, account,
... (`_ID_WORDS`) right before it. An opening parenthesis the matcher takes in but the number
does not close ("(030 1234 5678)") is left to the prose, so the placeholder keeps both.
libphonenumber itself skips dates, times, page ranges (`123-456`) and numbers inside longer
digit runs.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher

from components.clean.phone_regions import LANGUAGE_REGIONS

if TYPE_CHECKING:  # pii.py imports this module; PiiConfig is only a type here
    from components.clean.pii import PiiConfig

# ---- IPv4 in context ------------------------------------------------------------------

def _ipv4_ok(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


# Labels of numbered things; a dotted quad right after one is a version/section/OID, not an address.
_NUMBERING_WORDS = (
    # English (also common in other Latin-script languages)
    "version", "versions", "ver", "v", "release", "releases", "rel", "build", "builds", "revision", "rev",
    "patch", "hotfix", "update", "firmware", "fw", "driver", "kernel", "bios", "sdk", "api", "edition",
    "section", "sections", "sec", "subsection", "chapter", "chapters", "ch", "clause", "article", "art",
    "paragraph", "para", "table", "figure", "fig", "page", "pages", "pp", "appendix", "annex", "step",
    "rule", "item", "part", "note", "oid", "rfc", "iso", "din", "iec", "ieee", "itu-t",
    # German
    "abschnitt", "kapitel", "absatz", "ziffer", "artikel", "anhang", "ausgabe", "stand", "tabelle", "abbildung",
    # French / Spanish / Portuguese / Italian
    "chapitre", "paragraphe", "alinéa", "révision", "versión", "sección", "capítulo", "artículo", "apartado",
    "párrafo", "edición", "revisión", "compilación", "versão", "seção", "secção", "artigo", "capitolo",
    "articolo", "sezione", "versione", "paragrafo",
    # Russian
    "версия", "версии", "версию", "сборка", "сборки", "выпуск", "редакция", "раздел", "раздела", "разделе",
    "разделу", "пункт", "пункта", "пункте", "пункту", "пунктом", "глава", "главы", "главе", "главу",
    "статья", "статьи", "статье", "статью", "версией", "сборку", "п",
    # Chinese / Japanese / Korean
    "版本", "版本号", "版", "第", "章节", "条款", "固件", "驱动", "バージョン", "ビルド", "リリース", "버전", "빌드",
    # Hindi / Bengali
    "संस्करण", "वर्ज़न", "वर्जन", "खंड", "खण्ड", "धारा", "अनुच्छेद", "अध्याय", "सेक्शन", "সংস্করণ", "ধারা", "অধ্যায়", "অনুচ্ছেদ",
    # Arabic (prefixes such as و / ال glue on, so no left boundary)
    "إصدار", "الإصدار", "اصدار", "الاصدار", "النسخة", "نسخة", "القسم", "قسم", "المادة", "مادة", "البند", "بند",
    "الفصل", "فصل", "الفقرة", "فقرة",
)


def _label_pattern(words: tuple[str, ...]) -> re.Pattern:
    """`words` ending the text, then up to 3 punctuation/space characters and an optional "no."/"#".

    Short ASCII words need a non-letter before them ("v" must not end "dev"); longer ones may end
    a compound (Treiberversion), and non-ASCII ones take no boundary (Arabic prefixes glue on).
    """
    short = sorted((w for w in words if w.isascii() and len(w) < 6), key=len, reverse=True)
    long = sorted((w for w in words if not (w.isascii() and len(w) < 6)), key=len, reverse=True)
    alternatives = [rf"(?<![A-Za-z])(?:{'|'.join(map(re.escape, short))})", f"(?:{'|'.join(map(re.escape, long))})"]
    return re.compile(
        rf"(?:{'|'.join(alternatives)})\.?[\s:#№(\[§-]{{0,3}}(?:(?:no|nr|n°|num|number)\.?\s{{0,2}})?$",
        re.IGNORECASE,
    )


_NUMBERING_BEFORE = _label_pattern(_NUMBERING_WORDS + ("§",))
_NOT_ADDRESS_AFTER = re.compile(r"[A-Za-z]|-[A-Za-z]|\s?[节節章条條款项項版절장조항]")
# what may stand between two dotted numbers of one list
_LIST_GAP = re.compile(
    r"\s*(?:[,;/&+~–-]|\s|and|or|to|und|oder|bis|et|ou|à|y|o|a|e|и|или|до|和|或|至|到|、|及|और|या|से|و|أو|إلى)*\s*",
    re.IGNORECASE,
)
_DOTTED = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+){2,}(?![0-9]|\.[0-9])")  # 3+ parts: lists of versions / dates
_CONTEXT_CHARS = 40


def ipv4_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the dotted quads in the folded `text` that `ipaddress` accepts and that read as addresses.

    Non-overlapping, in order; rules in the module doc.
    """
    spans: list[tuple[int, int]] = []
    prev_end, prev_is_address = -1, True
    for match in _DOTTED.finditer(text):
        s, e = match.span()
        found = match.group(0)
        if prev_end >= 0 and _LIST_GAP.fullmatch(text, prev_end, s):
            is_address = prev_is_address
        else:
            is_address = not _NUMBERING_BEFORE.search(text[max(0, s - _CONTEXT_CHARS):s])
        if is_address and _NOT_ADDRESS_AFTER.match(text, e):
            is_address = False
        if (s > 0 and ("A" <= text[s - 1] <= "Z" or "a" <= text[s - 1] <= "z")):
            is_address = False
        prev_end, prev_is_address = e, is_address
        if is_address and found.count(".") == 3 and _ipv4_ok(found):
            spans.append((s, e))
    return spans


# ---- phones -----------------------------------------------------------------------------

# 7+ digits in one run of phone punctuation: the only places libphonenumber is asked about
_PHONE_HINT = re.compile(r"\+?\(?[0-9](?:[ ().\-/]{0,3}[0-9]){6,}")
_PHONE_WINDOW = 40  # characters of context either side, for the matcher's own boundary checks

# Labels of other numbers: a phone-shaped number right after one is not masked.
_ID_WORDS = (
    "order", "orders", "invoice", "inv", "isbn", "issn", "doi", "sku", "ticket", "tracking", "track",
    "account", "acct", "iban", "bic", "serial", "patent", "case", "ref", "reference", "receipt", "policy",
    "customer", "booking", "pnr", "awb", "batch", "lot", "part", "model", "id",
    "bestellung", "bestellnummer", "rechnung", "rechnungsnummer", "auftrag", "kundennummer", "aktenzeichen",
    "commande", "facture", "référence", "pedido", "factura", "referencia", "número de pedido", "encomenda",
    "fatura", "ordine", "fattura", "заказ", "заказа", "счёт", "счет", "счета", "накладная", "артикул",
    "订单", "订单号", "发票", "单号", "编号", "注文番号", "請求書", "주문번호", "ऑर्डर", "चालान", "बिल", "আদেশ", "অর্ডার",
    "طلب", "الطلب", "فاتورة", "الفاتورة", "رقم الطلب",
)
_ID_BEFORE = _label_pattern(_ID_WORDS)


def phone_regions(lang: str | None, config: PiiConfig) -> tuple[str, ...]:
    """The libphonenumber regions national numbers of a `lang` document are read in.

    `lang` is a py3langid label (doc.meta["lang"]); None, "und" and labels without regions use
    `config.phone_default_regions`. Source of the mapping: components/clean/phone_regions.py (CLDR).
    """
    return _regions(lang, tuple(config.phone_default_regions), config.phone_max_regions)


@lru_cache(maxsize=512)
def _regions(lang: str | None, default: tuple[str, ...], cap: int) -> tuple[str, ...]:
    return LANGUAGE_REGIONS.get(lang or "", default)[:cap]


def _digit_groups(s: str) -> list[str]:
    return re.findall(r"[0-9]+", s)


# 15.01.2023, 15-08-1947, 2023/05/14: dates libphonenumber would read as numbers of some plan
_DATE = re.compile(
    r"(?:[0-9]{1,2}[./-][0-9]{1,2}[./-](?:[0-9]{4}|[0-9]{2})|[0-9]{4}[./-][0-9]{1,2}[./-][0-9]{1,2})(?![0-9]|[./-][0-9])"
)
# 1939-1945, 1917--1960: a span of years (Hong Kong's 8-digit plan would take them)
_YEAR_RANGE = re.compile(r"\(?(?:1[5-9]|20)[0-9]{2}\s?[-–—/~]{1,2}\s?(?:1[5-9]|20)[0-9]{2}\)?")
# 12.345.678 / 12 345 678 / 1,234,567: every group after the first has 3 digits
_THOUSANDS = re.compile(r"[0-9]{1,3}(?:([ .,])[0-9]{3})(?:\1[0-9]{3})+")


def _refused(raw: str, after: str) -> bool:
    """Dates (2008-06-04 9:30), spans of years (1917--1960) and decimal thousands groupings.

    A thousands grouping (12 345 678) is refused with a decimal part after it (1 234 567,50)
    and, like every national number, when libphonenumber's VALID leniency refuses it (it wants
    the trunk prefix where the plan's format requires one: "12 345 678" is no Algerian number,
    "612 345 678" is a Spanish mobile).
    """
    if _DATE.match(raw) or _YEAR_RANGE.fullmatch(raw):
        return True
    return not raw.startswith("+") and bool(_THOUSANDS.fullmatch(raw)) and bool(re.match(r"[.,][0-9]", after))


def _fictional_but_formatted(raw: str, number: phonenumbers.PhoneNumber) -> bool:
    """Not a valid number, but written in exactly libphonenumber's grouping for it (2+ groups).

    The ranges set aside for fiction ("07700 900123", "(555) 123-4567") are invalid numbers,
    but in prose they stand for a phone number and are masked like one.
    """
    if phonenumbers.is_valid_number(number):
        return False  # valid numbers are VALID-leniency matches or nothing (trunk prefix missing)
    groups = _digit_groups(raw)
    if len(groups) < 2:
        return False
    style = PhoneNumberFormat.INTERNATIONAL if raw.startswith("+") else PhoneNumberFormat.NATIONAL
    return groups == _digit_groups(phonenumbers.format_number(number, style))


def phone_spans(text: str, regions: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, end) of every phone number in the folded `text`, non-overlapping, in order.

    `regions`: ISO 3166 codes national numbers are read in (`phone_regions`); () finds only
    international (+CC) numbers. Rules in the module doc.
    """
    windows: list[list[int]] = []
    for hint in _PHONE_HINT.finditer(text):
        s, e = max(0, hint.start() - _PHONE_WINDOW), hint.end() + _PHONE_WINDOW
        if windows and s <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], e)
        else:
            windows.append([s, e])
    if not windows:
        return []
    found: dict[int, int] = {}
    for s, e in windows:
        window = text[s:e]
        for region in regions or ("ZZ",):  # "ZZ": international numbers only
            for leniency in (Leniency.VALID, Leniency.POSSIBLE):
                for match in PhoneNumberMatcher(window, region, leniency=leniency):
                    start, end, raw = s + match.start, s + match.end, match.raw_string
                    if raw.startswith("(") and ")" not in raw:  # "(03-1234-5678)": the parentheses are the prose's
                        start, raw = start + 1, raw[1:]
                    if end - start <= found.get(start, start) - start or _refused(raw, text[end:end + 2]):
                        continue
                    if leniency is Leniency.POSSIBLE and not _fictional_but_formatted(raw, match.number):
                        continue
                    if not _ID_BEFORE.search(text[max(0, start - _CONTEXT_CHARS):start]):
                        found[start] = end
    spans: list[tuple[int, int]] = []
    for start in sorted(found):
        if not spans or start >= spans[-1][1]:
            spans.append((start, found[start]))
    return spans
