"""PII masking with typed placeholders: emails, IBANs, credit cards, IP addresses, phones.

    masked, counts = mask_pii("mail zhang.san@example.com", PiiConfig())
    # masked == "mail <EMAIL>", counts["email"] == 1

Types are applied in a fixed order — email, iban, credit_card, ipv6, ipv4, phone — so a later
pattern never sees the digits an earlier one replaced (placeholders hold no digits): a card
number is never half-masked as a phone, an IPv4-mapped IPv6 address is masked whole. Checksummed types are replaced only when the checksum
holds (Luhn for cards, ISO 13616 mod-97 for IBANs); IP addresses only when `ipaddress` accepts
them. Everything matches ASCII digits and letters only, with ASCII-only boundaries, so numbers
glued to Chinese, Hindi or Arabic text are found; run NFKC normalisation first so full-width
digits (１３８…) are ASCII. Digits of other scripts (Devanagari ९, Arabic-Indic ٩) are left alone.

Phones are the fuzzy type. Masked: `+CC` international numbers (8–15 digits), national numbers
written with separators — (555) 123-4567, 555-123-4567, 020 7946 0958, 01 23 45 67 89 — and
unseparated Chinese mobiles (1[3-9] + 9 digits). Not masked: years, dates, ISBN-like runs,
thousands groupings (12.345.678, 12 345 678), digit groups that continue a longer run (the
tail of a card number that failed Luhn) and other plain numbers in prose.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

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
    """Which PII types to mask; every type is on by default."""

    email: bool = True
    phone: bool = True
    ipv4: bool = True
    ipv6: bool = True
    credit_card: bool = True
    iban: bool = True


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
_IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])"
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    r"(?![0-9A-Za-z:]|\.[0-9])"
)
_SEP = r"[ .-]"
_PHONE = re.compile(
    r"(?<![A-Za-z0-9+/.-])(?<![0-9][ .-])(?:"
    # international: +CC, optional (0) trunk, groups of digits with optional separators
    r"\+[1-9][0-9]{0,2}(?:[ .-]?\(0\))?(?:[ .-]?\(?[0-9]{1,5}\)?){2,6}"
    # national with an area code in parentheses: (555) 123-4567, (010) 6552 9988
    r"|\([0-9]{2,5}\)[ ]?[0-9]{3,4}[ .-]?[0-9]{3,4}"
    # national with separators: 555-123-4567, 020 7946 0958, 0171 234 5678
    rf"|[0-9]{{2,5}}{_SEP}[0-9]{{3,4}}{_SEP}[0-9]{{3,4}}"
    # French-style pairs: 01 23 45 67 89
    r"|0[1-9](?:[ .][0-9]{2}){4}"
    # Chinese mobile, often written without separators: 13812345678
    r"|1[3-9][0-9]{9}"
    r")(?![A-Za-z0-9]|[ .-][0-9])"
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


def _thousands(s: str) -> bool:
    """12.345.678 / 12 345 678: every group after the first has exactly 3 digits."""
    groups = re.split(r"[ .]", s)
    return len(groups) >= 3 and all(len(g) == 3 and g.isdigit() for g in groups[1:]) and "-" not in s


def _phone_ok(s: str) -> bool:
    digits = _digits(s)
    if s.startswith("+"):
        return 8 <= len(digits) <= 15
    if not 8 <= len(digits) <= 13:
        return False
    return not _thousands(s)


def _replace_checked(pattern: re.Pattern, text: str, placeholder: str, ok: Callable[[str], bool], trim: bool) -> tuple[str, int]:
    count = 0

    def sub(match: re.Match) -> str:
        nonlocal count
        found = match.group(0)
        good = _trim_groups(found, ok) if trim else (found if ok(found) else None)
        if good is None:
            return found
        count += 1
        return placeholder + found[len(good):]

    return pattern.sub(sub, text), count


_RULES: dict[str, tuple[re.Pattern, Callable[[str], bool], bool]] = {
    "email": (_EMAIL, lambda s: True, False),
    "iban": (_IBAN, iban_ok, True),
    "credit_card": (_CARD, _card_ok, True),
    "ipv4": (_IPV4, _ipv4_ok, False),
    "ipv6": (_IPV6, _ipv6_ok, False),
    "phone": (_PHONE, _phone_ok, False),
}


def mask_pii(text: str, config: PiiConfig | None = None) -> tuple[str, dict[str, int]]:
    """(text with PII replaced by typed placeholders, {type: replacements} for every type)."""
    config = config or PiiConfig()
    counts = dict.fromkeys(ORDER, 0)
    for kind in ORDER:
        if not getattr(config, kind):
            continue
        pattern, ok, trim = _RULES[kind]
        text, counts[kind] = _replace_checked(pattern, text, PLACEHOLDERS[kind], ok, trim)
    return text, counts
