"""Keyed, per-field, rotatable tokens for ip and device_id, plus the other value encodings.

Token formats (all fit varchar(256)):
  hmac: ``h1.<key id>.<base64url(HMAC-SHA256(field subkey, value))>`` one-way, deterministic
  siv:  ``s1.<key id>.<base64url(AES-SIV(field subkey, value, ad=field))>`` reversible with the key

Each field gets its own subkey derived with HKDF from the master key, so the same text in
ip and device_id gives unrelated tokens, and equal values give equal tokens within a field
(analysts can still count duplicates). The key id lets several keys coexist across a rotation.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from login_etl.settings import MaskingKey

FIELDS: Final = ("ip", "device_id")
TOKEN_MAX = 256
_VERSION_PART_MAX = 999


class UnmaskError(ValueError):
    """A token cannot be opened: wrong key, tampered, wrong field or a one-way token."""


def _subkey(secret: bytes, mode: str, field: str, length: int) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"login-etl masking v1",
        info=f"{mode}/{field}".encode(),
    ).derive(secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Masker:
    """Turns a field value into a token with the first (writing) key; opens siv tokens with any."""

    def __init__(self, keys: Sequence[MaskingKey], mode: str = "hmac") -> None:
        if not keys:
            raise ValueError("at least one masking key is required")
        if mode not in ("hmac", "siv"):
            raise ValueError(f"unknown masking mode {mode!r}")
        self.mode = mode
        self.key_id = keys[0].key_id
        self._hmac_keys = {f: _subkey(keys[0].secret, "hmac", f, 32) for f in FIELDS}
        self._sivs = {
            k.key_id: {f: AESSIV(_subkey(k.secret, "siv", f, 64)) for f in FIELDS} for k in keys
        }
        self._prefix = f"{'h1' if mode == 'hmac' else 's1'}.{self.key_id}."

    def mask(self, field: str, value: str) -> str:
        data = value.encode("utf-8")
        if self.mode == "hmac":
            digest = hmac.digest(self._hmac_keys[field], data, "sha256")
        else:
            digest = self._sivs[self.key_id][field].encrypt(data, [field.encode()])
        return self._prefix + _b64(digest)

    def fits(self, value: str) -> bool:
        """Whether the token of this value fits varchar(256) (siv tokens grow with the value)."""
        if self.mode == "hmac":
            return True
        raw = 16 + len(value.encode("utf-8"))
        return len(self._prefix) + (raw * 4 + 2) // 3 <= TOKEN_MAX

    def unmask(self, token: str, field: str) -> str:
        if field not in FIELDS:
            raise UnmaskError(f"field must be one of {', '.join(FIELDS)}")
        version, _, rest = token.strip().partition(".")
        key_id, _, payload = rest.partition(".")
        if version == "h1":
            raise UnmaskError("this is a one-way hmac token; it cannot be unmasked")
        if version != "s1" or not key_id or not payload:
            raise UnmaskError("not a login-etl siv token")
        ciphers = self._sivs.get(key_id)
        if ciphers is None:
            raise UnmaskError(f"no configured key has id {key_id!r}")
        try:
            return ciphers[field].decrypt(_unb64(payload), [field.encode()]).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise UnmaskError(
                "token does not open with this key and field (wrong key, wrong field or tampered)"
            ) from None


def normalise_ip(text: str) -> str | None:
    """One canonical spelling per address (IPv4-mapped IPv6 becomes IPv4); None if not an ip."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id:
            return None
    return str(address)


class VersionError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_version(text: str) -> int:
    """major*1_000_000 + minor*1_000 + patch: order-preserving, so "2.3.0" != "23.0"."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise VersionError("invalid_version")
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    if any(n > _VERSION_PART_MAX for n in numbers):
        raise VersionError("version_out_of_range")
    return numbers[0] * 1_000_000 + numbers[1] * 1_000 + numbers[2]
