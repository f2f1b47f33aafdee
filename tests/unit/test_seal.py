"""Sealed ledger ids: only a key holder can choose the ledger id a message is stored under."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from login_etl.masking import Masker
from login_etl.settings import MaskingKey

OLD, NEW = MaskingKey("old", b"o" * 32), MaskingKey("new", b"n" * 32)


@given(st.text(min_size=1, max_size=120))
def test_seal_round_trips_under_rotation(ledger_id: str) -> None:
    sealed = Masker([OLD]).seal(ledger_id)
    assert Masker([OLD]).unseal(sealed) == ledger_id
    assert Masker([NEW, OLD]).unseal(sealed) == ledger_id  # old seals still open after rotation
    assert Masker([NEW]).unseal(sealed) is None  # a retired key no longer vouches


def test_forged_or_altered_seals_are_refused() -> None:
    masker = Masker([OLD])
    sealed = masker.seal("redrive:abc")
    ledger_id, key_id, tag = sealed.rsplit("|", 2)
    assert masker.unseal(f"redrive:abd|{key_id}|{tag}") is None
    assert masker.unseal(f"{ledger_id}|{key_id}|{tag[:-1]}A") is None
    assert masker.unseal("same-id") is None
    assert masker.unseal("same-id|old|") is None
    assert masker.unseal(f"{ledger_id}|nope|{tag}") is None
    assert Masker([MaskingKey("old", b"x" * 32)]).unseal(sealed) is None  # same id, other secret
