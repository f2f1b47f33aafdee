"""AWS Signature Version 4 for the one request shape the SQS JSON protocol uses."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import NoCredentialsError

_CONTENT_TYPE = "application/x-amz-json-1.0"
_SIGNED = "content-type;host;x-amz-date;x-amz-target;x-amzn-query-mode"
_SIGNED_WITH_TOKEN = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target;x-amzn-query-mode"


class Signer:
    """AWS Signature Version 4 for `POST /` with a JSON body, the one request shape SQS JSON uses.

    Byte for byte what botocore's SigV4Auth produces for the same request (a unit test
    checks it), without its per-call header objects, and with the derived signing key
    computed once per day instead of four HMACs per request.
    """

    def __init__(self, credentials: Any, region: str, host: str, service: str = "sqs",
                 path: str = "/") -> None:
        # botocore Credentials (refreshable: read at every request) or None.
        self.credentials = credentials
        self.region = region
        self.host = host
        self.service = service
        # the canonical URI: choose.lean_client passes only paths that need no normalising
        self.path = path
        # (secret, date, signing key): derived again only when the secret or the day changes.
        self._key: tuple[str, str, bytes] | None = None

    def headers(self, target: str, body: bytes, now: dt.datetime | None = None) -> dict[str, str]:
        if self.credentials is None:
            raise NoCredentialsError()
        creds = self.credentials.get_frozen_credentials()
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        token_line = f"x-amz-security-token:{creds.token}\n" if creds.token else ""
        canonical = (
            f"POST\n{self.path}\n\ncontent-type:{_CONTENT_TYPE}\nhost:{self.host}\nx-amz-date:{stamp}\n"
            f"{token_line}x-amz-target:{target}\nx-amzn-query-mode:true\n\n"
            f"{_SIGNED_WITH_TOKEN if creds.token else _SIGNED}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = (f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
                   f"{hashlib.sha256(canonical.encode()).hexdigest()}")
        signature = hmac.new(self._signing_key(creds.secret_key, date), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": _CONTENT_TYPE,
            "X-Amz-Target": target,
            "x-amzn-query-mode": "true",
            "X-Amz-Date": stamp,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                f"SignedHeaders={_SIGNED_WITH_TOKEN if creds.token else _SIGNED}, "
                f"Signature={signature}"
            ),
        }
        if creds.token:
            headers["X-Amz-Security-Token"] = creds.token
        return headers

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == date:
            return cached[2]
        key = f"AWS4{secret}".encode()
        for part in (date, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key = (secret, date, key)
        return key


def host_header(url: str) -> str:
    """The Host value SigV4 signs: lowercase host, [ipv6], port only when not the default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{host}:{parts.port}" if parts.port is not None and parts.port != default else host

