"""PII masking with typed placeholders: emails, IBANs, credit cards, IP addresses, phones.

    masked, counts = mask_pii("mail zhang.san@example.com", PiiConfig(), lang="zh")
    # masked == "mail <EMAIL>", counts["email"] == 1

Types are applied in a fixed order — email, iban, credit_card, ipv6, ipv4, phone — so a later
rule never sees the digits an earlier one replaced (placeholders hold no digits): a card
number is never half-masked as a phone, an IPv4-mapped IPv6 address is masked whole.
The rules live next to their documentation:
- `pii_fold`: the folded view every rule matches on (every script's digits, spaces and
  full-width forms as ASCII, the same length as the text);
- `pii_patterns`: e-mail, IBAN (ISO 13616 mod-97), credit card (Luhn) and IPv6 (`ipaddress`);
- `pii_context`: IPv4 addresses (not version, section or OID numbers) and phones
  (libphonenumber, regions from the document's language).
Rules match on the folded view; the placeholders replace the same spans of the original text.
The labelled set tests/components/data/pii_labelled.jsonl measures every rule.
"""

from __future__ import annotations

import phonenumbers
from pydantic import Field, field_validator

from components.clean.pii_context import ipv4_spans, phone_regions, phone_spans
from components.clean.pii_fold import fold
from components.clean.pii_patterns import pattern_spans
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


# ---- driver -----------------------------------------------------------------------------

def _splice(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    """`text` with each of the sorted, non-overlapping `spans` replaced by `placeholder`."""
    out, last = [], 0
    for s, e in spans:
        out += [text[last:s], placeholder]
        last = e
    out.append(text[last:])
    return "".join(out)


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
            spans = ipv4_spans(view)
        elif kind == "phone":
            spans = phone_spans(view, phone_regions(lang, config))
        else:
            spans = pattern_spans(kind, view)
        counts[kind] = len(spans)
        if spans:  # the placeholder is ASCII, its own fold: view and text stay aligned
            same = view is text
            view = _splice(view, spans, PLACEHOLDERS[kind])
            text = view if same else _splice(text, spans, PLACEHOLDERS[kind])
    return text, counts
