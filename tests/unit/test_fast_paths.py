"""The per-message fast paths give exactly what the general code gives, on any input."""

from __future__ import annotations

import hmac
import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from login_etl import masking
from login_etl.masking import Masker, VersionError, _b64, encode_version, normalise_ip, parse_ip
from login_etl.settings import MaskingKey


def reference_version(text: str) -> int | str:
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return "invalid_version"
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    if any(n > 999 for n in numbers):
        return "version_out_of_range"
    return numbers[0] * 1_000_000 + numbers[1] * 1_000 + numbers[2]


octet = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "1e1", "٣", " 1"]))
dotted = st.lists(octet, min_size=3, max_size=5).map(".".join)
spaced = st.tuples(st.sampled_from(["", " ", "\t", "\n", "\u3000"]), dotted,
                   st.sampled_from(["", " ", "\r\n"])).map("".join)


@given(st.one_of(dotted, spaced, st.ip_addresses().map(str),
                 st.text(alphabet=string.printable, max_size=20)))
def test_normalise_ip_matches_ipaddress(text: str) -> None:
    assert normalise_ip(text) == parse_ip(text)


hex_colons = st.text(alphabet="0123456789abcdefABCDEF:", min_size=2, max_size=39)
v6 = st.ip_addresses(v=6)
v6_spellings = st.one_of(
    v6.map(str), v6.map(lambda a: a.exploded), v6.map(lambda a: a.exploded.upper()),
    # ::/96, where inet_ntop and ipaddress spell differently
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    st.lists(st.sampled_from(["0", "00", "000", "0000", "1", "ab", "FFFF", ""]), min_size=2,
             max_size=9).map(":".join))


@given(st.one_of(hex_colons, v6_spellings))
def test_normalise_ipv6_in_hex_groups_matches_ipaddress(text: str) -> None:
    assert normalise_ip(text) == parse_ip(text)


@given(st.one_of(hex_colons, v6_spellings))
def test_the_formatter_alone_matches_ipaddress(text: str) -> None:
    # What a platform whose inet_ntop spells differently would use for every address.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masking, "_NTOP_AGREES", False)
        assert normalise_ip(text) == parse_ip(text)


def test_this_platforms_inet_ntop_agrees_with_ipaddress() -> None:
    assert masking._NTOP_AGREES


digits = st.text(alphabet="0123456789", min_size=0, max_size=5)
versions = st.lists(st.one_of(digits, st.sampled_from(["٣", "1a", " 1", "+1"])),
                    min_size=1, max_size=4).map(".".join)


@given(st.one_of(versions, st.text(max_size=12)))
def test_encode_version_matches_the_general_rule(text: str) -> None:
    try:
        got: int | str = encode_version(text)
    except VersionError as exc:
        got = exc.reason
    assert got == reference_version(text)


@given(st.binary(min_size=32, max_size=32), st.sampled_from(["ip", "device_id"]),
       st.text(max_size=200).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)))
def test_hmac_token_is_hmac_sha256_of_the_field_subkey(secret: bytes, field: str, value: str) -> None:
    masker = Masker([MaskingKey("k1", secret)])
    expected = hmac.digest(masker._hmac_keys[field], value.encode(), "sha256")
    assert masker.mask(field, value) == "h1.k1." + _b64(expected)


@given(st.binary(max_size=100))
def test_b64_is_unpadded_urlsafe_base64(data: bytes) -> None:
    import base64

    assert _b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
