"""PII found by a pattern and a check: e-mail addresses, IBANs, credit card numbers, IPv6 addresses.

Checksummed types are replaced only when the checksum holds (Luhn for cards, ISO 13616 mod-97
for IBANs); IPv6 addresses only when `ipaddress` accepts them and they are not code-like
("::", "::1"). Patterns run on the folded view (`pii_fold.fold`), so they are ASCII.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

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


def _ipv6_ok(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    # "::", "::1" or "a::b" read like code; an address has 2+ groups and 4+ digits (fe80::1)
    groups = [g for g in re.split(r"[:.]", s) if g]
    return len(groups) >= 2 and sum(map(len, groups)) >= 4


def _checked_spans(pattern: re.Pattern, text: str, ok: Callable[[str], bool], trim: bool) -> list[tuple[int, int]]:
    """Spans of `pattern`'s matches that pass `ok` (with `trim`: their longest passing prefix of groups)."""
    spans = []
    for match in pattern.finditer(text):
        found = match.group(0)
        good = _trim_groups(found, ok) if trim else (found if ok(found) else None)
        if good is not None:
            spans.append((match.start(), match.start() + len(good)))
    return spans


_RULES: dict[str, tuple[re.Pattern, Callable[[str], bool], bool]] = {
    "email": (_EMAIL, lambda s: True, False),
    "iban": (_IBAN, iban_ok, True),
    "credit_card": (_CARD, _card_ok, True),
    "ipv6": (_IPV6, _ipv6_ok, False),
}


def pattern_spans(kind: str, text: str) -> list[tuple[int, int]]:
    """(start, end) of every `kind` ("email", "iban", "credit_card" or "ipv6") in the folded `text`, in order, non-overlapping.

    A match counts only when its check passes; for IBANs and cards the longest prefix of whole
    groups that passes (`_trim_groups`). Raises KeyError for any other kind.
    """
    pattern, ok, trim = _RULES[kind]
    return _checked_spans(pattern, text, ok, trim)
