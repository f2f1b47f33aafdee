"""app_version encoding: order-preserving, collision-free, strict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from login_etl.masking import VersionError, encode_version


@pytest.mark.parametrize(("text", "expected"), [
    ("2.3.0", 2_003_000), ("23.0", 23_000_000), ("0.96", 96_000), ("0.2.6", 2_006),
    ("5", 5_000_000), ("999.999.999", 999_999_999), ("0.0.0", 0), ("01.02.03", 1_002_003),
])
def test_known_versions(text: str, expected: int) -> None:
    assert encode_version(text) == expected


def test_the_seed_collision_is_gone() -> None:
    assert encode_version("2.3.0") != encode_version("23.0")
    assert encode_version("2.3.0") != encode_version("0.23.0")


@pytest.mark.parametrize(("text", "reason"), [
    ("1.2.3.4", "invalid_version"), ("", "invalid_version"), ("a.b", "invalid_version"),
    ("1.-2", "invalid_version"), ("١.٢", "invalid_version"), (" 1.2", "invalid_version"),
    ("1000.0", "version_out_of_range"), ("1.1000.0", "version_out_of_range"),
    ("1.0.1000", "version_out_of_range"),
])
def test_bad_versions_are_rejections(text: str, reason: str) -> None:
    with pytest.raises(VersionError) as info:
        encode_version(text)
    assert info.value.reason == reason


parts = st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999))


@given(parts, parts)
def test_encoding_preserves_order_and_fits_postgres_integer(a: tuple[int, ...],
                                                            b: tuple[int, ...]) -> None:
    ea, eb = encode_version(".".join(map(str, a))), encode_version(".".join(map(str, b)))
    assert (a < b) == (ea < eb) and (a == b) == (ea == eb)
    assert 0 <= ea < 2**31
