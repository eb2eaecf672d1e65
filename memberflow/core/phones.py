"""Phone normalization, tokens and masking (DESIGN §4).

A phone becomes an identifier only after normalization to a mainland mobile number (11 digits, ``1[3-9]``
prefix). ``phone_token`` is HMAC-SHA256 over that normalized number with ``MEMBERFLOW_ID_KEY``, as lowercase
hex, so insurance partners that hash with the same key produce tokens that join ours.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable

_MOBILE = re.compile(r"1[3-9]\d{9}")
_SEPARATORS = re.compile(r"[\s\-().·]")
_HEX_TOKEN = re.compile(r"[0-9a-f]{64}")


def normalize_phone(raw: object) -> str | None:
    """Return the 11-digit mainland mobile number in ``raw``, or None when it is not one.

    Accepts +86 / 0086 / 86 prefixes, spaces, dashes, dots, brackets and full-width digits.
    """
    if raw is None:
        return None
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    text = _SEPARATORS.sub("", text)
    if text.startswith("+86"):
        text = text[3:]
    elif text.startswith("0086"):
        text = text[4:]
    elif len(text) == 13 and text.startswith("86"):
        text = text[2:]
    return text if _MOBILE.fullmatch(text) else None


def phone_token(phone: str, key: bytes) -> str:
    """HMAC-SHA256 of a normalized phone, lowercase hex."""
    return hmac.new(key, phone.encode("utf-8"), hashlib.sha256).hexdigest()


def mask_phone(phone: str) -> str:
    """138****1234: what ops may see of a normalized phone."""
    return f"{phone[:3]}****{phone[-4:]}"


def normalize_token(raw: object) -> str | None:
    """A partner-supplied HMAC token in canonical form (64 lowercase hex digits), or None."""
    if raw is None:
        return None
    text = str(raw).strip().lower()
    return text if _HEX_TOKEN.fullmatch(text) else None


# Anything that could be a mainland mobile written by a person: digits possibly split by any separator
# normalize_phone accepts (_SEPARATORS), optionally behind a country prefix. Used to redact free text
# (quarantined raw rows, log lines): whatever extract would accept as a phone is masked.
_SEP = r"[\s\-().·]*"
_PHONE_LIKE = re.compile(rf"(?<!\d)(?:(?:\+?86|0086){_SEP})?\(?1{_SEP}[3-9](?:{_SEP}\d){{9}}(?!\d)")


def replace_phones(text: str, replace: Callable[[str], str]) -> tuple[str, int]:
    """``text`` with every mobile-looking number (full-width digits included) replaced by ``replace`` of
    the normalized number, and how many were replaced. Text without one comes back unchanged."""
    if sum(map(str.isdigit, text)) < 11:  # the common case, cheaply
        return text, 0
    folded = unicodedata.normalize("NFKC", text)
    found = 0

    def _replace(match: re.Match[str]) -> str:
        nonlocal found
        phone = normalize_phone(match.group(0))
        if phone is None:
            return match.group(0)
        found += 1
        return replace(phone)

    replaced = _PHONE_LIKE.sub(_replace, folded)
    return (replaced, found) if found else (text, 0)


def redact_phones(text: str) -> str:
    """Mask every mobile-looking number in free text (full-width digits included)."""
    return replace_phones(text, mask_phone)[0]
