"""PII masking: every type in several scripts, checksums respected, prose numbers untouched."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from components.clean.pii import PiiConfig, iban_ok, luhn_ok, mask_pii


def counts(**kw: int) -> dict[str, int]:
    base = {"email": 0, "iban": 0, "credit_card": 0, "ipv6": 0, "ipv4": 0, "phone": 0}
    return {**base, **kw}


@pytest.mark.parametrize(
    ("text", "masked", "expected"),
    [
        # English
        ("Mail john.doe+news@mail.example.co.uk or call (555) 123-4567 / +1 555 123 4567.",
         "Mail <EMAIL> or call <PHONE> / <PHONE>.", counts(email=1, phone=2)),
        ("Pay 4111 1111 1111 1111 or 5500-0000-0000-0004 to GB82 WEST 1234 5698 7654 32 now.",
         "Pay <CREDIT_CARD> or <CREDIT_CARD> to <IBAN> now.", counts(credit_card=2, iban=1)),
        ("Server 192.168.1.20, v6 2001:db8::8a2e:370:7334, full 2001:0db8:0000:0000:0000:ff00:0042:8329, "
         "mapped ::ffff:192.0.2.128, link fe80::1.",
         "Server <IP_ADDRESS>, v6 <IP_ADDRESS>, full <IP_ADDRESS>, mapped <IP_ADDRESS>, link <IP_ADDRESS>.",
         counts(ipv4=1, ipv6=4)),
        # Chinese, no spaces around the numbers
        ("请联系我：13812345678，邮箱 zhang.san@example.com",
         "请联系我：<PHONE>，邮箱 <EMAIL>", counts(email=1, phone=1)),
        ("电话+86 138 1234 5678地址10.0.0.1卡号4111111111111111账号DE89370400440532013000。",
         "电话<PHONE>地址<IP_ADDRESS>卡号<CREDIT_CARD>账号<IBAN>。",
         counts(phone=1, ipv4=1, credit_card=1, iban=1)),
        # Hindi
        ("मुझसे +91 98765 43210 पर संपर्क करें या ramesh@example.in पर ईमेल करें। आईपी 172.16.254.1 है।",
         "मुझसे <PHONE> पर संपर्क करें या <EMAIL> पर ईमेल करें। आईपी <IP_ADDRESS> है।",
         counts(phone=1, email=1, ipv4=1)),
        ("कार्ड 4111-1111-1111-1111 और खाता FR14 2004 1010 0505 0001 3M02 606",
         "कार्ड <CREDIT_CARD> और खाता <IBAN>", counts(credit_card=1, iban=1)),
        # Arabic
        ("اتصل بي على +971 50 123 4567 أو راسلني على ali@example.ae من 2001:db8::1",
         "اتصل بي على <PHONE> أو راسلني على <EMAIL> من <IP_ADDRESS>", counts(phone=1, email=1, ipv6=1)),
        # German national formats
        ("Ruf an: 030 1234 5678 oder +49 (0)30 1234 5678.", "Ruf an: <PHONE> oder <PHONE>.", counts(phone=2)),
    ],
)
def test_masks_each_type_in_several_languages(text, masked, expected):
    assert mask_pii(text, PiiConfig()) == (masked, expected)


@pytest.mark.parametrize(
    "text",
    [
        "in 2023 and 1999",
        "from 1999-2023, on 2023-01-15 and 15.01.2023 at 12:30:45",
        "card 4111 1111 1111 1112 fails Luhn",  # 16 digits, wrong check digit
        "card 4111111111111112 fails Luhn",
        "IBAN DE89 3704 0044 0532 0130 01 has a wrong checksum",
        "IBAN GB82WEST12345698765431",
        "999.1.1.1 and 256.0.0.1 are not addresses, nor is 1.2.3",
        "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",
        "12.345.678 Einwohner, 12 345 678 habitants, 1,234,567 people",
        "order 12345678901234567 shipped",
        "std::vector and a::b and 10:30",
        "人口13亿，2023年增长0.5%",
    ],
)
def test_leaves_non_pii_alone(text):
    assert mask_pii(text) == (text, counts())


def test_full_width_digits_after_nfkc():
    import unicodedata

    text = unicodedata.normalize("NFKC", "电话：１３８１２３４５６７８")
    assert mask_pii(text) == ("电话:<PHONE>", counts(phone=1))  # NFKC also made the colon ASCII


def test_counts_are_exact_and_types_can_be_turned_off():
    text = "a@x.io, b@y.org, 13812345678, 13912345678, 4111 1111 1111 1111, 1.2.3.4"
    assert mask_pii(text)[1] == counts(email=2, phone=2, credit_card=1, ipv4=1)
    masked, c = mask_pii(text, PiiConfig(email=False, credit_card=False))
    assert masked == "a@x.io, b@y.org, <PHONE>, <PHONE>, 4111 1111 1111 1111, <IP_ADDRESS>"
    assert c == counts(phone=2, ipv4=1)
    with pytest.raises(ValidationError):
        PiiConfig(emails=False)


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert not iban_ok("DE89370400440532013000X")  # right checksum family, wrong length for DE
