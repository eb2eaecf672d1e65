import pytest

from memberflow.core.vault import ContactVault, VaultError

PHONE = "137" + "5550" + "0001"


def test_sealing_is_deterministic_and_reversible():
    vault = ContactVault(bytes(range(64)))
    sealed = vault.seal(PHONE)
    assert sealed == vault.seal(PHONE)
    assert PHONE not in sealed
    assert vault.open(sealed) == PHONE


def test_another_key_cannot_open():
    sealed = ContactVault(bytes(range(64))).seal(PHONE)
    with pytest.raises(VaultError):
        ContactVault(bytes(range(1, 65))).open(sealed)
