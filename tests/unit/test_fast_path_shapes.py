"""The fast paths cover the usual shapes, and only shapes the general path spells the same way.

test_fast_paths.py proves they agree with the general code on any input; that alone cannot
tell whether a fast path still takes the values it was written for (a narrowed regex just
sends them to the slow path, with the same result). Here the general path is made to fail,
so a value that misses the fast path fails the test.
"""

from __future__ import annotations

import pytest

from login_etl import masking
from login_etl.masking import encode_version, normalise_ip


@pytest.fixture
def no_general_ip_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str) -> str | None:
        raise AssertionError(f"{text!r} missed the fast path")

    monkeypatch.setattr(masking, "parse_ip", refuse)


@pytest.mark.parametrize("octet", range(256))
def test_every_canonical_octet_takes_the_fast_path(no_general_ip_path: None, octet: int) -> None:
    for text in (f"{octet}.0.0.0", f"1.{octet}.2.3", f"10.20.{octet}.30", f"255.255.255.{octet}"):
        assert normalise_ip(text) == text
        assert normalise_ip(f" {text}\t") == text


@pytest.mark.parametrize("text", ["256.0.0.0", "0.0.0.256", "01.2.3.4", "1.2.3.04", "1.2.3",
                                  "1.2.3.4.5", "1.2.3.4/8", "300.1.1.1", "1.2.3.1000", "a.b.c.d",
                                  "1..2.3", "260.1.1.1", "1.2.3.4\n5"])
def test_non_canonical_spellings_miss_the_fast_path(text: str) -> None:
    assert masking._CANONICAL_IPV4.fullmatch(text.strip()) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("2001:db8:85a3::8a2e:370:7334", "2001:db8:85a3::8a2e:370:7334"),
    ("2001:0DB8:85A3:0000:0000:8A2E:0370:7334", "2001:db8:85a3::8a2e:370:7334"),
    ("fe80:0:0:0:0:0:0:1", "fe80::1"), ("::", "::"), ("::1", "::1"), ("1::", "1::"),
    ("1:0:0:1:0:0:0:1", "1:0:0:1::1"), ("1:0:0:0:1:0:0:1", "1::1:0:0:1"),
    ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"),
    ("2001:0db8:0009:0000:0000:0000:0099:9999", "2001:db8:9::99:9999"),
    # ::/96 (inet_ntop would write a dotted quad) and IPv4-mapped addresses in hex groups
    ("::102:304", "::102:304"), ("0:0:0:0:0:0:a:b", "::a:b"), ("::ffff:102:304", "1.2.3.4"),
    ("0:0:0:0:0:FFFF:C000:0201", "192.0.2.1"),
])
def test_ipv6_in_hex_groups_takes_the_fast_path(no_general_ip_path: None, text: str,
                                                expected: str) -> None:
    assert normalise_ip(text) == normalise_ip(f"\t{text} ") == expected


@pytest.mark.parametrize("text", ["::ffff:1.2.3.4", "fe80::1%eth0", "::1.2.3.4", "1:2:3:4:5:6:7:8:9",
                                  "1::2::3", "12345::", "g::1", ":", ":1:2:3:4:5:6:7"])
def test_other_ipv6_spellings_go_to_the_general_path(text: str) -> None:
    # Dotted quads and zone ids miss the shape; what inet_pton refuses is asked of ipaddress.
    assert normalise_ip(text) == masking.parse_ip(text)


@pytest.mark.parametrize("text", ["0", "1", "9", "10", "99", "100", "999", "1.0", "0.96", "2.3.0",
                                  "999.999.999", "0.0.0", "01.02.03", "10.200.3", "5.0.19"])
def test_usual_versions_take_the_fast_path(text: str) -> None:
    assert masking._SHORT_VERSION.fullmatch(text) is not None
    expected = [int(p) for p in text.split(".")] + [0] * (3 - len(text.split(".")))
    assert encode_version(text) == expected[0] * 1_000_000 + expected[1] * 1_000 + expected[2]


@pytest.mark.parametrize("text", ["1000", "1.1000", "1.0.1000", "1.2.3.4", "", ".", "1.", ".1",
                                  "1..2", "a", "1.2a", "١", "+1", " 1"])
def test_other_versions_miss_the_fast_path(text: str) -> None:
    assert masking._SHORT_VERSION.fullmatch(text) is None
