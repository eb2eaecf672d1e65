"""The contact vault: the only place a plain phone number is kept, encrypted.

Extract writes, per landed partition, the phone tokens it saw with the phone encrypted by AES-SIV. AES-SIV
is deterministic authenticated encryption: the same phone under the same key always gives the same
ciphertext, so rerunning a date rewrites byte-identical vault files, and no nonce has to be managed. Two
readers open it: the SMS connector, which needs the number to send a message, and an admin's unmasked
segment export through the ops API, which is audited (``memberflow/api/export.py``).
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

_ASSOCIATED = [b"memberflow-contact-vault-v1"]


def partition_files(vault_dir: Path) -> list[Path]:
    """Every vault partition file (``<channel>/<table>/dt=<date>/*.parquet``), oldest partition first, so a
    reader that keeps the last entry per token keeps the newest."""
    return sorted(vault_dir.glob("*/*/dt=*/*.parquet"))


class VaultError(ValueError):
    """A vault entry could not be decrypted with the configured key."""


class ContactVault:
    def __init__(self, key: bytes) -> None:
        self._cipher = AESSIV(key)

    def seal(self, phone: str) -> str:
        return base64.urlsafe_b64encode(self._cipher.encrypt(phone.encode("utf-8"), _ASSOCIATED)).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._cipher.decrypt(base64.urlsafe_b64decode(sealed), _ASSOCIATED).decode("utf-8")
        except (InvalidTag, ValueError) as exc:
            raise VaultError("vault entry does not decrypt with MEMBERFLOW_VAULT_KEY") from exc
