"""Masking's refusals, word for word: they are what an operator reads at 3 a.m., and they
must name the problem without quoting a value or a secret."""

from __future__ import annotations

import pytest

from login_etl.masking import (
    Masker,
    TokenTooLong,
    UnmaskError,
    VersionError,
    _b64,
    _unb64,
    encode_version,
)
from login_etl.settings import MaskingKey

KEY = MaskingKey("kat1", bytes(range(32)))
OTHER = MaskingKey("old", bytes(range(1, 33)))
SIV = Masker([KEY, OTHER], "siv")


def refusal(token: str, field: str = "ip", masker: Masker = SIV) -> str:
    with pytest.raises(UnmaskError) as info:
        masker.unmask(token, field)
    return str(info.value)


def test_masker_configuration_refusals() -> None:
    with pytest.raises(ValueError) as info:
        Masker([], "hmac")
    assert str(info.value) == "at least one masking key is required"
    with pytest.raises(ValueError) as info:
        Masker([KEY], "aes")
    assert str(info.value) == "unknown masking mode 'aes'"
    for keys in ([KEY, MaskingKey("kat1", b"x" * 32)], [MaskingKey("a b", b"x" * 32)],
                 [MaskingKey("", b"x" * 32)], [MaskingKey("k" * 17, b"x" * 32)],
                 [MaskingKey("a.b", b"x" * 32)], [MaskingKey("a!", b"x" * 32)]):
        with pytest.raises(ValueError) as info:
            Masker(keys, "siv")
        assert str(info.value) == "masking key ids must be unique, 1-16 of [A-Za-z0-9_-]"


def test_mask_refusals() -> None:
    with pytest.raises(ValueError) as info:
        SIV.mask("user_id", "x")
    assert str(info.value) == "field must be one of ip, device_id"
    with pytest.raises(TokenTooLong) as info:
        SIV.mask("device_id", "x" * 171)
    assert str(info.value) == "the siv token of this device_id would exceed 256 characters"
    with pytest.raises(ValueError) as info:
        SIV.mask("ip", "\ud800")
    assert str(info.value) == "the ip is not valid Unicode text (lone surrogate)"


def test_unmask_refusals() -> None:
    token = Masker([KEY], "siv").mask("ip", "192.0.2.1")
    assert refusal(token, "user_id") == "field must be one of ip, device_id"
    assert refusal(Masker([KEY]).mask("ip", "192.0.2.1")) == (
        "this is a one-way hmac token (h1.); it cannot be unmasked by anyone")
    for text in ("192.0.2.1", "s1.kat1.", "s2.kat1.AAAA", "s1.a b.AAAA", "s1..AAAA", "",
                 "s1.kkkkkkkkkkkkkkkkk.AAAA"):
        assert refusal(text) == "not a login-etl siv token (expected s1.<key id>.<base64url>)"
    assert refusal("s1.new.AAAA") == (
        "token was written with key id 'new', which is not configured (configured: kat1, old)")
    assert refusal(token, "device_id") == (
        "token does not open with key 'kat1' as a device_id "
        "(wrong key secret, wrong --field, or the token was altered)")
    # a dot in the payload is an altered token of a configured key, not another key id
    assert refusal(token[:-2] + ".x") == (
        "token does not open with key 'kat1' as a ip "
        "(wrong key secret, wrong --field, or the token was altered)")
    assert SIV.unmask(f" {token}\n", "ip") == "192.0.2.1"


@pytest.mark.parametrize("text", ["", "AA==", "A+B/", "a b", "ab.c", "é"])
def test_unb64_refuses_other_alphabets(text: str) -> None:
    with pytest.raises(ValueError) as info:
        _unb64(text)
    assert str(info.value) == "not base64url"


@pytest.mark.parametrize("text", ["AB", "AAB", "ABC", "AAAAAB"])
def test_unb64_refuses_non_canonical_spellings(text: str) -> None:
    """Two spellings of one payload would be two tokens for one value."""
    with pytest.raises(ValueError) as info:
        _unb64(text)
    assert str(info.value) == "not canonical base64url"


@pytest.mark.parametrize("text", ["A", "AAAAA"])
def test_unb64_refuses_impossible_lengths(text: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        _unb64(text)


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256))])
def test_unb64_inverts_b64(data: bytes) -> None:
    assert _b64(data) == "" or _unb64(_b64(data)) == data


@pytest.mark.parametrize("ledger_id", ["a|b", "|", "x||y", "a|kat1|tag", "redrive:|m-1|"])
def test_seals_of_ids_with_the_separator(ledger_id: str) -> None:
    sealed = SIV.seal(ledger_id)
    assert sealed.startswith(ledger_id + "|kat1|")
    assert SIV.unseal(sealed) == ledger_id
    assert Masker([OTHER, KEY]).unseal(sealed) == ledger_id


def test_version_errors_carry_their_reason_as_text() -> None:
    for text, reason in (("1.2.3.4", "invalid_version"), ("1.1000", "version_out_of_range")):
        with pytest.raises(VersionError) as info:
            encode_version(text)
        assert info.value.reason == reason and str(info.value) == reason


@pytest.mark.parametrize("key_id", ["0", "9", "a", "z", "A", "Z", "_", "-", "k" * 16, "K2026_x-9"])
def test_every_allowed_key_id_writes_and_opens_tokens(key_id: str) -> None:
    masker = Masker([MaskingKey(key_id, bytes(range(32)))], "siv")
    token = masker.mask("device_id", "d-1")
    assert token.startswith(f"s1.{key_id}.")
    assert masker.unmask(token, "device_id") == "d-1"
    sealed = masker.seal("m-1")
    assert masker.unseal(sealed) == "m-1"


@pytest.mark.parametrize("id_length", range(1, 17))
def test_the_256_character_bound_for_every_key_id_length(id_length: int) -> None:
    """The token length grows in steps of 1-2 characters: with some key id lengths the first
    value too long gives exactly 257 characters, with others 258."""
    masker = Masker([MaskingKey("k" * id_length, bytes(range(32)))], "siv")
    longest = max(n for n in range(300) if masker.fits("x" * n))
    assert len(masker.mask("device_id", "x" * longest)) in (255, 256)
    with pytest.raises(TokenTooLong):
        masker.mask("device_id", "x" * (longest + 1))


@pytest.mark.parametrize(("text", "expected"), [
    ("0999.0999.0999", 999_999_999), ("0000", 0), ("1.0001", 1_001_000), ("0999", 999_000_000),
    ("01000", "version_out_of_range"), ("1.01000", "version_out_of_range"),
    ("0.0.1000", "version_out_of_range"), ("0000.0.0.0", "invalid_version"),
])
def test_versions_beyond_the_short_shape_are_bounded_per_part(text: str, expected: int | str) -> None:
    """Leading zeros leave the fast path (3 digits at most): the general rule bounds each part."""
    try:
        got: int | str = encode_version(text)
    except VersionError as exc:
        got = exc.reason
    assert got == expected
