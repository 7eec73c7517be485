"""PII masking with typed placeholders: emails, IBANs, credit cards, IP addresses, phones.

    masked, counts = mask_pii("mail zhang.san@example.com", PiiConfig(), lang="zh")
    # masked == "mail <EMAIL>", counts["email"] == 1

Types are applied in a fixed order — email, iban, credit_card, ipv6, ipv4, phone — so a later
rule never sees the digits an earlier one replaced (placeholders hold no digits): a card
number is never half-masked as a phone, an IPv4-mapped IPv6 address is masked whole.
Checksummed types are replaced only when the checksum holds (Luhn for cards, ISO 13616 mod-97
for IBANs); IP addresses only when `ipaddress` accepts them.

Every script's digits, spaces and full-width forms. The clean step normalises to NFC, which
keeps full-width forms, no-break spaces and the digits of each script as written. So every rule
matches on a folded VIEW of the text (`fold`): one code point for one code point, the same
length, where
- every decimal digit (Unicode category Nd: Arabic-Indic ٠-٩, Persian ۰-۹, Devanagari ०-९,
  Bengali, Thai, full-width １, ...) is its ASCII digit (`unicodedata.decimal`);
- full-width ASCII (U+FF01-FF5E: ＡＢＣ, ＠, ．, ＋, （）, ，, ：) is ASCII;
- every space separator (category Zs: U+00A0 and U+202F no-break spaces of French typography,
  thin spaces, the ideographic space U+3000, ...) is U+0020;
- hyphens, figure dash, en dash and minus signs (U+2010-2013, U+2212, U+FE63, U+FF0D) are "-"
  (em dash U+2014 and U+2015 stay: they separate words, not digits, and folding them would
  glue a word to an e-mail address after "—");
- the Arabic decimal and thousands separators U+066B / U+066C are "." and ",".
A rule's matches are spans of the view, and the placeholders replace the same spans of the
ORIGINAL text: everything outside a masked span is left exactly as written. Patterns are
ASCII on the view with ASCII-only boundaries, so numbers glued to Chinese, Hindi or Arabic text
are found. libphonenumber reads these digits itself too, but the prefilter, the date, year and
thousands checks and the grouping comparison are ASCII patterns: it is given the view.

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
quad are masked. The labelled set tests/components/data/pii_labelled.jsonl measures every rule.

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
does not close ("(030 1234 5678)") is left to the prose, so the placeholder keeps both. libphonenumber itself skips dates, times, page ranges
(`123-456`) and numbers inside longer digit runs.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import unicodedata
from functools import cache, lru_cache
from typing import Callable

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher
from pydantic import Field, field_validator

from components.clean.phone_regions import LANGUAGE_REGIONS
from components.config import Section

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
    "ipv6": "<IP_ADDRESS>",  # before ipv4, so ::ffff:192.0.2.1 is masked whole
    "ipv4": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}
ORDER = tuple(PLACEHOLDERS)  # the order types are applied in; also the order of the counts


class PiiConfig(Section):
    """Which PII types to mask (every type is on by default) and how phones are read."""

    email: bool = Field(True, description="mask e-mail addresses as <EMAIL>")
    phone: bool = Field(True, description="mask phone numbers as <PHONE> (libphonenumber, regions from the document language)")
    ipv4: bool = Field(True, description="mask IPv4 addresses as <IP_ADDRESS>; version/section/OID numbers are left alone")
    ipv6: bool = Field(True, description="mask IPv6 addresses as <IP_ADDRESS>")
    credit_card: bool = Field(True, description="mask Luhn-valid card numbers (13-19 digits) as <CREDIT_CARD>")
    iban: bool = Field(True, description="mask ISO 13616 (mod-97) valid IBANs as <IBAN>")
    phone_default_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "IN", "CN"],
        description="ISO 3166 regions national phone numbers are read in when the document language has no "
        "region (und, eo, vo, ...) or none is given; the default covers the main regions of the demo "
        "corpus' largest languages (en, hi, zh). [] masks only international (+CC) numbers there",
    )
    phone_max_regions: int = Field(
        6, ge=1, le=50,
        description="at most this many regions (most speakers first, see components/clean/phone_regions.py) per "
        "language; each region is one more matcher pass over each candidate and one more numbering plan "
        "that can accept a look-alike (en: US, IN, PK, NG, PH, GB)",
    )

    @field_validator("phone_default_regions")
    @classmethod
    def _known_regions(cls, value: list[str]) -> list[str]:
        bad = [r for r in value if r not in phonenumbers.SUPPORTED_REGIONS]
        if bad:
            raise ValueError(f"phone_default_regions {bad} are not libphonenumber regions: use ISO 3166 alpha-2 codes in upper case, e.g. 'US', 'DE'")
        return value


# ---- the folded view ---------------------------------------------------------------------

# one-character replacements besides digits, spaces and full-width ASCII (see the module doc)
_DASHES = "\u2010\u2011\u2012\u2013\u2212\ufe63"  # hyphen, non-breaking hyphen, figure dash, en dash, minus, small hyphen-minus
_ARABIC_SEPARATORS = {0x066B: ".", 0x066C: ","}  # ARABIC DECIMAL SEPARATOR, ARABIC THOUSANDS SEPARATOR


@cache
def fold_table() -> dict[int, int]:
    """The `str.translate` table of `fold`: code point -> ASCII code point, one for one.

    Built from the running Python's `unicodedata` (Unicode 14.0 on Python 3.11) in about 0.05 s
    on first use; 758 entries there: 650 non-ASCII decimal digits, 16 non-ASCII space
    separators, the 94 full-width ASCII forms (10 of them digits), 6 hyphens/dashes and the
    2 Arabic number separators.
    """
    table: dict[int, int] = {}
    for cp in range(0x80, sys.maxunicode + 1):
        ch = chr(cp)
        digit = unicodedata.decimal(ch, None)  # defined exactly for category Nd
        if digit is not None:
            table[cp] = 0x30 + digit
        elif ch.isspace() and unicodedata.category(ch) == "Zs":
            table[cp] = 0x20
    table.update({cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)})  # full-width ! .. ~
    table.update({ord(ch): ord("-") for ch in _DASHES})
    table.update({cp: ord(ch) for cp, ch in _ARABIC_SEPARATORS.items()})
    return table


def fold(text: str) -> str:
    """`text` as the rules read it: the same length, each character folded per `fold_table`.

    Position i of the result is position i of `text`, so a span matched in it is the span to
    replace in `text`. ASCII text is returned as is (same object).
    """
    if text.isascii():
        return text
    view = text.translate(fold_table())
    assert len(view) == len(text), "fold_table maps one code point to one code point"
    return view


# ---- checksums --------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# ISO 13616 registry lengths; a country not listed is accepted at any length 15–34
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(candidate: str) -> bool:
    """ISO 13616: known length for the country and (BBAN + country + check digits) mod 97 == 1."""
    iban = candidate.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban.isascii() or not iban.isalnum():
        return False
    if IBAN_LENGTHS.get(iban[:2], len(iban)) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


# ---- patterns ---------------------------------------------------------------------------
# Boundaries are ASCII-only on purpose: `\b` and `\w` treat CJK and Devanagari as word
# characters, which would hide "电话13812345678" from a `\b`-anchored pattern.

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![0-9+])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    r"(?![0-9A-Za-z:]|\.[0-9])"
)
def _digits(s: str) -> str:
    return "".join(ch for ch in s if "0" <= ch <= "9")


def _trim_groups(candidate: str, ok: Callable[[str], bool]) -> str | None:
    """The longest prefix of whole space/dash-separated groups that passes `ok`, if any.

    A pattern may swallow one group too many ("card 4111 1111 1111 1111 2024"); dropping
    trailing groups recovers the real number without a second regex.
    """
    parts = re.split(r"(?<=[A-Za-z0-9])(?=[ -])", candidate)
    while parts:
        text = "".join(parts)
        if ok(text):
            return text
        parts.pop()
    return None


def _card_ok(s: str) -> bool:
    digits = _digits(s)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _ipv4_ok(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


def _ipv6_ok(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    # "::", "::1" or "a::b" read like code; an address has 2+ groups and 4+ digits (fe80::1)
    groups = [g for g in re.split(r"[:.]", s) if g]
    return len(groups) >= 2 and sum(map(len, groups)) >= 4


# ---- IPv4 in context ------------------------------------------------------------------

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


def _ipv4_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the dotted quads that `ipaddress` accepts and that read as addresses (rules in the module doc)."""
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


def _phone_spans(text: str, regions: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, end) of every phone number in `text`, non-overlapping, in order."""
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


# ---- driver -----------------------------------------------------------------------------

def _checked_spans(pattern: re.Pattern, text: str, ok: Callable[[str], bool], trim: bool) -> list[tuple[int, int]]:
    """Spans of `pattern`'s matches that pass `ok` (with `trim`: their longest passing prefix of groups)."""
    spans = []
    for match in pattern.finditer(text):
        found = match.group(0)
        good = _trim_groups(found, ok) if trim else (found if ok(found) else None)
        if good is not None:
            spans.append((match.start(), match.start() + len(good)))
    return spans


def _splice(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    out, last = [], 0
    for s, e in spans:
        out += [text[last:s], placeholder]
        last = e
    out.append(text[last:])
    return "".join(out)


_RULES: dict[str, tuple[re.Pattern, Callable[[str], bool], bool]] = {
    "email": (_EMAIL, lambda s: True, False),
    "iban": (_IBAN, iban_ok, True),
    "credit_card": (_CARD, _card_ok, True),
    "ipv6": (_IPV6, _ipv6_ok, False),
}


def mask_pii(text: str, config: PiiConfig | None = None, lang: str | None = None) -> tuple[str, dict[str, int]]:
    """(text with PII replaced by typed placeholders, {type: replacements} for every type in ORDER).

    `lang` is the document's language (py3langid label, doc.meta["lang"]); it picks the regions
    national phone numbers are read in (`phone_regions`). None or "und": the default regions.
    Rules match on `fold(text)`; placeholders replace the same spans of `text`, so every
    character outside a masked span is returned as written (no-break spaces, full-width forms,
    Arabic-Indic or Devanagari digits of non-PII numbers stay).
    """
    config = config or PiiConfig()
    counts = dict.fromkeys(ORDER, 0)
    view = fold(text)
    for kind in ORDER:
        if not getattr(config, kind):
            continue
        if kind == "ipv4":
            spans = _ipv4_spans(view)
        elif kind == "phone":
            spans = _phone_spans(view, phone_regions(lang, config))
        else:
            pattern, ok, trim = _RULES[kind]
            spans = _checked_spans(pattern, view, ok, trim)
        counts[kind] = len(spans)
        if spans:  # the placeholder is ASCII, its own fold: view and text stay aligned
            same = view is text
            view = _splice(view, spans, PLACEHOLDERS[kind])
            text = view if same else _splice(text, spans, PLACEHOLDERS[kind])
    return text, counts
