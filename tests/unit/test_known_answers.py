"""Known-answer vectors: the exact tokens, key ids and seals the product stores.

Every stored token is joined against tokens written earlier, so these strings must never
change by accident: a change to the HKDF salt or info, the HMAC, the AES-SIV associated data,
the base64url spelling or the prefix fails here. A deliberate change is a new format version
(h2./s2.) with its own vectors, never an edit of these.
"""

from __future__ import annotations

import json

import pytest

from login_etl.masking import Masker, normalise_ip
from login_etl.messages import LoginEvent, Received, parse
from login_etl.settings import MaskingKey, Settings, derived_key_id

SECRET = bytes(range(32))
KEY = MaskingKey("kat1", SECRET)

# (field, value as masked, hmac token, siv token)
VECTORS = [
    ("ip", "192.0.2.1",
     "h1.kat1.dxYXksAv7DPNA7Go1Skv7TiW6J9jCMQy29qyJaZCxLE",
     "s1.kat1.DedrpNB5fsxnKq_EUzKce6WjcvmYlcO6_Q"),
    ("ip", "0.0.0.0",
     "h1.kat1.Skqcab4cp1RcEwBk78QYtpWim-8Q0GoMFTbPFNzbz8o",
     "s1.kat1.4sP1LNibOmwIpO2Qf8kU1hdt_NbgZZI"),
    ("ip", "2001:db8::1",
     "h1.kat1.oyJxGO8knW0ENROVQDPNp80U9c9EQdnrp1g_xto0oeE",
     "s1.kat1.doTXgKkIn85IWKnO6Xq_Uiol2MgjILn14mqR"),
    # the normalised form of ::ffff:198.51.100.7 (an IPv4-mapped IPv6 address)
    ("ip", "198.51.100.7",
     "h1.kat1.Cg8bO0eMizzOjY4f-Ur-_2rDsC6KWzWn3PXVL7wBmCc",
     "s1.kat1.RC41KhF054C3QEabpFzwkMewo2wpQsdzg8nVNA"),
    ("device_id", "593-47-5928",
     "h1.kat1.1mBDrioqLU-WtuikC32qiG_LEnS-vRpjFvXv6v-xvwU",
     "s1.kat1._lvSTn65nbnRx6LVi3v3reuXjaZ0mSqyIzHs"),
    ("device_id", "dév-é📱",
     "h1.kat1.SGfSAS1p6sJAXUT7FnWVM5Dn29AFHHxiPy04zuk4kpU",
     "s1.kat1.KC_z_njQaeUrCYnCvkSHnQuZ5zy2kSCfpVxU"),
]


@pytest.mark.parametrize(("field", "value", "hmac_token", "siv_token"), VECTORS)
def test_tokens_are_the_known_answers(field: str, value: str, hmac_token: str,
                                      siv_token: str) -> None:
    assert Masker([KEY], "hmac").mask(field, value) == hmac_token
    assert Masker([KEY], "siv").mask(field, value) == siv_token


@pytest.mark.parametrize(("field", "value", "hmac_token", "siv_token"), VECTORS)
def test_known_siv_tokens_still_open(field: str, value: str, hmac_token: str,
                                     siv_token: str) -> None:
    """Tokens written today open tomorrow, also after a new writing key was added."""
    rotated = Masker([MaskingKey("next", bytes(range(1, 33))), KEY], "siv")
    assert rotated.unmask(siv_token, field) == value


@pytest.mark.parametrize(("spelling", "normalised"), [
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("0:0:0:0:0:FFFF:C633:6407", "198.51.100.7"),
    (" 192.0.2.1\t", "192.0.2.1"),
    ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
])
def test_spellings_normalise_to_the_vector_values(spelling: str, normalised: str) -> None:
    assert normalise_ip(spelling) == normalised


def test_a_parsed_message_carries_the_known_tokens() -> None:
    """The whole path (parse, normalise, trim, mask), not only Masker.mask."""
    body = {"user_id": "u-1", "app_version": "2.3.0", "device_type": "android",
            "ip": "::ffff:198.51.100.7", "locale": None, "device_id": " 593-47-5928 "}
    for mode, column in (("hmac", 2), ("siv", 3)):
        event = parse(Received("m-1", "rh", json.dumps(body), 1_700_000_000_000),
                      Masker([KEY], mode))
        assert isinstance(event, LoginEvent)
        assert event.masked_ip == VECTORS[3][column]
        assert event.masked_device_id == VECTORS[4][column]


@pytest.mark.parametrize(("secret", "key_id"), [
    (bytes(range(32)), "c3b7868b"),
    (bytes(32), "6dc9ace6"),
    (b"\xff" * 48, "83fdb0dd"),
])
def test_derived_key_ids_are_the_known_answers(secret: bytes, key_id: str) -> None:
    assert derived_key_id(secret) == key_id
    settings = Settings.from_env({"LOGIN_ETL_MASKING_KEY": secret.hex()})
    assert settings.writing_key == MaskingKey(key_id, secret)


@pytest.mark.parametrize(("ledger_id", "sealed"), [
    ("m-1", "m-1|kat1|SFUgLOpdJmRHowOsM3Wg9w"),
    ("redrive:abc", "redrive:abc|kat1|byh8SYdZCxR3l5HwDvs2Gg"),
])
def test_seals_are_the_known_answers(ledger_id: str, sealed: str) -> None:
    """A DLQ copy sealed today must unseal after an upgrade, or redrive stores it twice."""
    assert Masker([KEY]).seal(ledger_id) == sealed
    assert Masker([KEY], "siv").seal(ledger_id) == sealed
    assert Masker([MaskingKey("next", bytes(range(1, 33))), KEY]).unseal(sealed) == ledger_id
