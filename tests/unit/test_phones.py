import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memberflow.core.phones import mask_phone, normalize_phone, normalize_token, phone_token, redact_phones

# Numbers are assembled at test time from parts so no real-looking number sits in the repository.
BASE = "139" + "0012" + "3456"


@pytest.mark.parametrize(
    "raw",
    [
        BASE,
        f"+86{BASE}",
        f"+86 {BASE}",
        f"0086{BASE}",
        f"86{BASE}",
        f"{BASE[:3]} {BASE[3:7]} {BASE[7:]}",
        f"{BASE[:3]}-{BASE[3:7]}-{BASE[7:]}",
        f"+86-{BASE[:3]}-{BASE[3:7]}-{BASE[7:]}",
        f"({BASE[:3]}){BASE[3:]}",
        f"  {BASE}\t",
        BASE.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
        "＋８６ " + BASE.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    ],
)
def test_messy_formats_normalize_to_the_same_number(raw):
    assert normalize_phone(raw) == BASE


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "12345",
        BASE[:-1],
        BASE + "0",
        "2" + BASE[1:],
        "12" + BASE[2:],
        "010-12345678",
        "abc",
        "+1 " + BASE,
    ],
)
def test_non_mobile_values_are_not_identifiers(raw):
    assert normalize_phone(raw) is None


def test_token_is_lowercase_hex_hmac_sha256_of_the_normalized_number():
    key = b"k3y"
    expected = hmac.new(key, BASE.encode(), hashlib.sha256).hexdigest()
    assert phone_token(BASE, key) == expected
    assert phone_token(normalize_phone(f"+86 {BASE}"), key) == expected
    assert phone_token(BASE, b"other") != expected


def test_partner_tokens_are_canonicalized():
    token = phone_token(BASE, b"k")
    assert normalize_token(token.upper()) == token
    assert normalize_token(f" {token} ") == token
    assert normalize_token(token[:-1]) is None
    assert normalize_token("z" * 64) is None


def test_mask_keeps_prefix_and_last_four():
    assert mask_phone(BASE) == "139****3456"


def test_redact_masks_every_format_in_free_text_and_leaves_other_numbers():
    text = f'a,{BASE},b  "+86 {BASE[:3]} {BASE[3:7]} {BASE[7:]}" order 2026{BASE}99 amount 1234.50'
    out = redact_phones(text)
    assert BASE not in out.replace(" ", "").replace("-", "").replace("2026" + BASE + "99", "")
    assert out.count("139****3456") == 2
    assert "2026" + BASE + "99" in out  # a longer digit run is not a phone
    assert "1234.50" in out


@given(
    prefix=st.sampled_from(["", "+86", "0086", "86", "+86 ", "＋８６"]),
    separators=st.lists(st.sampled_from(["", "", " ", "-", ".", "·", "(", ")"]), min_size=11, max_size=11),
    full_width=st.booleans(),
)
def test_every_format_the_normalizer_accepts_is_redacted_in_free_text(prefix, separators, full_width):
    """What extract would accept as this phone must not survive in a quarantined raw row or a log line."""
    written = prefix + "".join(sep + digit for sep, digit in zip(separators, BASE, strict=True))
    if full_width:
        written = written.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    if normalize_phone(written) != BASE:
        return  # not a form extract accepts either
    out = redact_phones(f"source: {written}, by sms")
    assert BASE not in re.sub(r"\D", "", out), (written, out)
    assert "139****3456" in out
