"""The per-message fast paths give exactly what the general code gives, on any input."""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from login_etl import jsonread, masking
from login_etl.masking import Masker, VersionError, _b64, encode_version, normalise_ip, parse_ip
from login_etl.settings import MaskingKey
from login_etl.sqs import client as sqs_client


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


@pytest.mark.parametrize("spelling", [
    "1:0:0:1:0:0:1:1", "1:0:1:0:0:1:1:1", "1:0:0:1:1:1:1:1", "1:0:1:1:1:1:1:1",
    "1:0:1:0:0:0:1:1", "1:1:1:1:1:1:0:0", "0:0:1:1:1:1:1:1", "0:0:0:0:0:0:0:0",
    "ffff:0:0:1:0:0:0:0", "1:2:3:4:5:6:7:8", "::1.2.3.4"])
def test_the_formatter_spells_as_ipaddress(spelling: str) -> None:
    # Equal zero runs (the first is "::"), runs of one and two, all zeros, none.
    address = ipaddress.IPv6Address(spelling)
    assert masking._compressed(address.packed) == str(address)


def test_this_platforms_inet_ntop_agrees_with_ipaddress() -> None:
    assert masking._ntop_agrees() and masking._NTOP_AGREES


def test_an_inet_ntop_that_spells_otherwise_or_fails_is_not_trusted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = masking.socket.inet_ntop
    monkeypatch.setattr(masking.socket, "inet_ntop", lambda family, packed: real(family, packed).upper())
    assert not masking._ntop_agrees()

    def refuses(family: int, packed: bytes) -> str:
        raise OSError("no IPv6 here")
    monkeypatch.setattr(masking.socket, "inet_ntop", refuses)
    assert not masking._ntop_agrees()


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


# What SQS requests and answers can hold: strings (lone surrogates included), 64-bit integers,
# booleans, floats, nulls, lists and objects (keys that are not strings, on the request side).
scalars = st.one_of(st.text(), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


def same(a: Any, b: Any) -> bool:
    # json's own reading of both sides, NaN-free: == compares them, with -0.0 == 0.0 told apart.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@given(st.dictionaries(st.one_of(st.text(max_size=8), st.integers(0, 9)), documents, max_size=5))
def test_a_request_body_reads_back_as_jsons_would(params: dict[Any, Any]) -> None:
    body = sqs_client._dumps(params)
    reference = json.dumps(params, separators=(",", ":")).encode()
    assert same(json.loads(body), json.loads(reference))


@given(documents)
def test_an_answer_reads_as_json_reads_it(document: Any) -> None:
    for text in (json.dumps(document), json.dumps(document, ensure_ascii=False)):
        data = text.encode("utf-8", "surrogatepass")
        try:
            expected = json.loads(data)
        except ValueError:
            # a lone surrogate written raw is not UTF-8: json refuses it, and so must _loads
            with pytest.raises(ValueError):
                jsonread.loads(data)
            continue
        assert same(jsonread.loads(data), expected)


@pytest.mark.parametrize("data", [b"NaN", b'{"a": Infinity}', b'"\\ud800"', b"[" * 300 + b"]" * 300,
                                  b'{"a":1,"a":2}', b"{} x", b""])
def test_what_orjson_refuses_or_reads_apart_is_jsons_call(data: bytes) -> None:
    try:
        expected: Any = json.loads(data)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            jsonread.loads(data)
        return
    got = jsonread.loads(data)
    assert same(got, expected) or (isinstance(got, float) and math.isnan(got))
