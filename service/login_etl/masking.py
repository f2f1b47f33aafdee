"""Keyed, per-field, rotatable tokens for ip and device_id, plus the other value encodings.

Token formats (ASCII; every token of an accepted value fits varchar(256)):
  hmac: ``h1.<key id>.<base64url(HMAC-SHA256(field subkey, value))>`` one-way, deterministic
  siv:  ``s1.<key id>.<base64url(AES-SIV(field subkey, value, ad=field))>`` reversible with the key

Each field gets its own subkey derived with HKDF from the master key, so the same text in
ip and device_id gives unrelated tokens, and equal values give equal tokens within a field
(analysts can still count duplicates). The key id lets several keys coexist across a rotation.
No error message here ever contains a secret, a subkey or the value being masked.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from login_etl.settings import MaskingKey

FIELDS: Final = ("ip", "device_id")
MODES: Final = ("hmac", "siv")
TOKEN_MAX: Final = 256
SIV_TAG_BYTES: Final = 16
_VERSION_PART_MAX = 999
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
# An IPv6 address spelled with hex groups and colons only (no dotted quad, no zone id): the
# C parser (inet_pton) reads it, _compressed spells it as ipaddress does.
_HEX_IPV6 = re.compile(r"[0-9A-Fa-f:]{2,39}")
_IPV4_MAPPED = bytes(10) + b"\xff\xff"
_IPV4_COMPATIBLE = bytes(12)
_SHORT_VERSION = re.compile(r"([0-9]{1,3})(?:\.([0-9]{1,3}))?(?:\.([0-9]{1,3}))?")


class UnmaskError(ValueError):
    """A token cannot be opened: wrong key, tampered, wrong field or a one-way token."""


class TokenTooLong(ValueError):
    """The siv token of this value would not fit varchar(256); the caller rejects the message."""


def _subkey(secret: bytes, mode: str, field: str, length: int) -> bytes:
    """One independent key per (mode, field): a leak or misuse of one never affects another."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"login-etl masking v1",
        info=f"{mode}/{field}".encode(),
    ).derive(secret)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    """Unpadded base64url (== urlsafe_b64encode(data).rstrip(b"=")), without its wrappers."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE, b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url: only the alphabet, and only the canonical spelling of the bytes."""
    if not _B64URL.match(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hash states after the padded key (RFC 2104).

    Copying them per value gives the same digest as hmac.digest for less work: OpenSSL 3
    re-fetches the algorithm and re-keys on every hmac.digest call.
    """
    # The subkeys are 32 bytes, under SHA-256's 64-byte block, so padding is all they need.
    block = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in block)),
            hashlib.sha256(bytes(b ^ 0x5C for b in block)))


def siv_token_length(key_id: str, value_bytes: int) -> int:
    """Length of an siv token: prefix + base64url of (16-byte tag + ciphertext of equal size)."""
    raw = SIV_TAG_BYTES + value_bytes
    return len(f"s1.{key_id}.") + (raw * 4 + 2) // 3


class Masker:
    """Turns a field value into a token with the first (writing) key; opens siv tokens with any."""

    def __init__(self, keys: Sequence[MaskingKey], mode: str = "hmac") -> None:
        if not keys:
            raise ValueError("at least one masking key is required")
        if mode not in MODES:
            raise ValueError(f"unknown masking mode {mode!r}")
        ids = [k.key_id for k in keys]
        if len(set(ids)) != len(ids) or not all(_KEY_ID.match(i) for i in ids):
            raise ValueError("masking key ids must be unique, 1-16 of [A-Za-z0-9_-]")
        self.mode = mode
        self.key_id = keys[0].key_id
        self.key_ids: tuple[str, ...] = tuple(ids)
        self._hmac_keys = {f: _subkey(keys[0].secret, "hmac", f, 32) for f in FIELDS}
        self._hmac_states = {f: _hmac_states(k) for f, k in self._hmac_keys.items()}
        self._sivs = {
            k.key_id: {f: AESSIV(_subkey(k.secret, "siv", f, 64)) for f in FIELDS} for k in keys
        }
        self._prefix = f"{'h1' if mode == 'hmac' else 's1'}.{self.key_id}."
        self._seal_keys = {k.key_id: _subkey(k.secret, "seal", "ledger-id", 32) for k in keys}

    def __repr__(self) -> str:
        return f"Masker(mode={self.mode!r}, key_ids={self.key_ids!r})"

    def mask(self, field: str, value: str) -> str:
        """The token of an already normalised value (see normalise_ip; device_id is trimmed)."""
        if field not in FIELDS:
            raise ValueError(f"field must be one of {', '.join(FIELDS)}")
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"the {field} is not valid Unicode text (lone surrogate)") from None
        if self.mode == "hmac":
            inner, outer = self._hmac_states[field]
            inner = inner.copy()
            inner.update(data)
            outer = outer.copy()
            outer.update(inner.digest())
            # The same digest as hmac.digest(self._hmac_keys[field], data, "sha256").
            digest = outer.digest()
        else:
            if siv_token_length(self.key_id, len(data)) > TOKEN_MAX:
                raise TokenTooLong(f"the siv token of this {field} would exceed {TOKEN_MAX} characters")
            digest = self._sivs[self.key_id][field].encrypt(data, [field.encode()])
        return self._prefix + _b64(digest)

    def fits(self, value: str) -> bool:
        """Whether the token of this value fits varchar(256) (siv tokens grow with the value)."""
        if self.mode == "hmac":
            return True
        return siv_token_length(self.key_id, len(value.encode("utf-8"))) <= TOKEN_MAX

    def unmask(self, token: str, field: str) -> str:
        """The value inside an siv token, if one of the configured keys wrote it for this field."""
        if field not in FIELDS:
            raise UnmaskError(f"field must be one of {', '.join(FIELDS)}")
        version, _, rest = token.strip().partition(".")
        key_id, _, payload = rest.partition(".")
        if version == "h1":
            raise UnmaskError("this is a one-way hmac token (h1.); it cannot be unmasked by anyone")
        if version != "s1" or not _KEY_ID.match(key_id) or not payload:
            raise UnmaskError("not a login-etl siv token (expected s1.<key id>.<base64url>)")
        ciphers = self._sivs.get(key_id)
        if ciphers is None:
            raise UnmaskError(
                f"token was written with key id {key_id!r}, which is not configured "
                f"(configured: {', '.join(self.key_ids)})"
            )
        try:
            return ciphers[field].decrypt(_unb64(payload), [field.encode()]).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise UnmaskError(
                f"token does not open with key {key_id!r} as a {field} "
                "(wrong key secret, wrong --field, or the token was altered)"
            ) from None


    def seal(self, ledger_id: str) -> str:
        """`<ledger id>|<key id>|<tag>`: a ledger id only a key holder can attach to a message.

        Message attributes survive SQS's own move to a DLQ and can be set by any producer; an
        unsealed id would let one message claim another's ledger entry and be dropped as its
        duplicate.
        """
        return f"{ledger_id}|{self.key_id}|{self._seal_tag(self.key_id, ledger_id)}"

    def unseal(self, sealed: object) -> str | None:
        """The ledger id inside a seal made with any configured key, else None.

        The value comes from a message attribute, which any producer can set to anything: it
        never raises. The tags are compared as bytes (compare_digest refuses non-ASCII str).
        """
        if not isinstance(sealed, str):
            return None
        parts = sealed.rsplit("|", 2)
        if len(parts) != 3 or parts[1] not in self._seal_keys or not parts[2].isascii():
            return None
        ledger_id, key_id, tag = parts
        expected = self._seal_tag(key_id, ledger_id)
        return ledger_id if hmac.compare_digest(tag.encode(), expected.encode()) else None

    def _seal_tag(self, key_id: str, ledger_id: str) -> str:
        # surrogatepass: a lone surrogate (JSON can carry one) gets a tag instead of an error.
        data = ledger_id.encode("utf-8", "surrogatepass")
        return _b64(hmac.digest(self._seal_keys[key_id], data, "sha256")[:16])


def normalise_ip(text: str) -> str | None:
    """One canonical spelling per address (IPv4-mapped IPv6 becomes IPv4); None if not an ip."""
    text = text.strip()
    if _CANONICAL_IPV4.fullmatch(text):
        # Already what str(ipaddress.ip_address(text)) gives, without building the address.
        return text
    if _HEX_IPV6.fullmatch(text):
        # ipaddress takes 20-40 µs for an IPv6 address, this path about 1: inet_ntop spells
        # the address as ipaddress does (RFC 5952), but for ::/96.
        try:
            packed = socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            return parse_ip(text)
        if packed[:12] == _IPV4_MAPPED:
            return socket.inet_ntoa(packed[12:])
        if packed[:12] == _IPV4_COMPATIBLE or not _NTOP_AGREES:
            # inet_ntop spells ::/96 with a dotted quad ("::1.2.3.4"), ipaddress does not.
            return _compressed(packed)
        return socket.inet_ntop(socket.AF_INET6, packed)
    return parse_ip(text)


def _compressed(packed: bytes) -> str:
    """str(ipaddress.IPv6Address(packed)): lowercase hex groups, the longest run of two or more
    zero groups (the first of equal runs) as "::" (RFC 5952)."""
    groups = [int.from_bytes(packed[i:i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_length, start, length = 0, 0, 0, 0
    for i, group in enumerate(groups):
        if group:
            length = 0
            continue
        if not length:
            start = i
        length += 1
        if length > best_length:
            best_start, best_length = start, length
    parts = [f"{group:x}" for group in groups]
    if best_length < 2:
        return ":".join(parts)
    end = best_start + best_length
    return ":".join(parts[:best_start]) + "::" + ":".join(parts[end:])


def parse_ip(text: str) -> str | None:
    """normalise_ip's general path (ipaddress for every spelling); the fast path must agree."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # A zone id is refused first: "::ffff:1.2.3.4%eth0" is no more an address than
        # "fe80::1%eth0", whatever it maps to.
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


def _ntop_agrees() -> bool:
    """Whether this platform's inet_ntop spells addresses outside ::/96 as ipaddress does
    (glibc's, musl's and the BSDs' do): a token is the HMAC of the spelling, so one address
    must have one spelling wherever the worker runs."""
    cases = ("1:0:0:1:0:0:0:1", "1:0:0:0:1:0:0:1", "1:0:3:4:5:6:7:8", "1:2:3:4:5:6:0:0",
             "0:0:1:2:3:4:5:6", "0:0:0:0:1:0:0:0", "ABCD:0:0:0:0:0:0:EF", "fe80::1", "1::")
    try:
        return all(socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, c))
                   == str(ipaddress.IPv6Address(c)) for c in cases)
    except (OSError, ValueError):
        return False


_NTOP_AGREES = _ntop_agrees()


class VersionError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@functools.lru_cache(maxsize=4096)
def encode_version(text: str) -> int:
    """major*1_000_000 + minor*1_000 + patch: order-preserving, so "2.3.0" != "23.0".

    Cached: a fleet runs a few hundred versions at most, and a hit is cheaper than the regex.
    A version string is not personal data; what raises is not cached.
    """
    match = _SHORT_VERSION.fullmatch(text)
    # The usual shape is decided by one regex; anything else takes the general path.
    if match:
        major, minor, patch = match.groups(default="0")
        return int(major) * 1_000_000 + int(minor) * 1_000 + int(patch)
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise VersionError("invalid_version")
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    if any(n > _VERSION_PART_MAX for n in numbers):
        raise VersionError("version_out_of_range")
    return numbers[0] * 1_000_000 + numbers[1] * 1_000 + numbers[2]
