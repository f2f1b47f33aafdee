"""The SQS client a process uses: the lean one where the settings allow it, else boto3's, with
the credentials and CA bundle boto3 would use."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from login_etl.settings import ConfigError, Settings
from login_etl.sqs.batches import DELETES_IN_FLIGHT
from login_etl.sqs.client import SqsClient

if TYPE_CHECKING:
    from login_etl.queue import SqsApi

# An endpoint path this client sends and signs as it is (botocore would sign the same): no
# empty, "." or ".." segment, nothing that needs percent-encoding.
_PLAIN_PATH = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?")


def make_client(settings: Settings, *, pool: int | None = None) -> SqsApi:
    """One client per process: botocore retries off (tenacity owns them), its pool sized to the
    pollers and each settler's deletes in flight.

    The lean JSON-protocol client (login_etl.sqs: a fraction of boto3's CPU per call) unless
    the endpoint needs what only boto3 does (a proxy, FIPS or dual-stack endpoint selection)
    or LOGIN_ETL_SQS_CLIENT=boto3 asks for boto3.
    """
    from botocore.exceptions import PartialCredentialsError

    try:
        return _make_client(settings, pool or settings.pollers * (1 + DELETES_IN_FLIGHT) + 4)
    # A key id without its secret, say: the configuration is wrong, no retry can help.
    except PartialCredentialsError as exc:
        raise ConfigError(f"AWS credentials: {exc}") from None
    # botocore's "Invalid endpoint: ..." for an endpoint URL it cannot use.
    except ValueError as exc:
        raise ConfigError(f"SQS endpoint (AWS_ENDPOINT_URL or the queue URL): {exc}") from None


def _make_client(settings: Settings, pool: int) -> SqsApi:
    lean = lean_client(settings, pool)
    if lean is not None:
        return lean
    check_ca_bundle(settings)
    # Imported only here: boto3 (s3transfer and all) costs a noticeable start-up, and the
    # lean client does not need it.
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=settings.region,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=pool,
        connect_timeout=3,
        read_timeout=settings.wait_time_seconds + 10,
        parameter_validation=False,
        tcp_keepalive=True,
    )
    client: SqsApi = boto3.session.Session().client("sqs", endpoint_url=settings.endpoint_url,
                                                    config=config)
    return client


def lean_client(settings: Settings, pool: int) -> SqsClient | None:
    """This client for the settings, or None where boto3 has to do it.

    boto3 keeps: LOGIN_ETL_SQS_CLIENT=boto3, an HTTP(S) proxy that applies to the endpoint,
    FIPS or dual-stack endpoint selection (AWS_USE_FIPS_ENDPOINT, ..._DUALSTACK_..., or the
    same in the AWS config file), and an endpoint with a query, a fragment or a path that is
    not plain (a gateway's prefix such as /sqs is plain, and this client posts to it).
    Credentials and the CA bundle (AWS_CA_BUNDLE or the config file's ca_bundle) are what
    boto3 would use: the environment's when the environment alone decides them, else those
    of a botocore session.
    """
    if settings.sqs_client != "lean":
        return None
    endpoint = settings.endpoint_url or _aws_endpoint(settings.region)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.query or parts.fragment or not _plain_path(parts.path):
        return None
    if _proxied(parts.scheme, parts.hostname):
        return None
    env = os.environ
    if _environment_decides(env):
        # The chain's first provider answers from the environment; no session (and none of
        # botocore's imports, a noticeable part of every start) is needed to know it.
        credentials: Any = _EnvironmentCredentials(
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
            env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None)
        flags = [env.get(f"AWS_USE_{name}_ENDPOINT", "") for name in ("FIPS", "DUALSTACK")]
        ca_bundle = env.get("AWS_CA_BUNDLE") or None
    else:
        import botocore.session

        session = botocore.session.get_session()
        credentials = session.get_credentials()
        flags = [str(session.get_config_variable(name))
                 for name in ("use_fips_endpoint", "use_dualstack_endpoint")]
        ca_bundle = session.get_config_variable("ca_bundle")
    if any(flag.lower() == "true" for flag in flags):
        return None
    if parts.scheme == "https":
        if ca_bundle:
            _check_ca_bundle(ca_bundle)
        else:
            ca_bundle = _default_ca_bundle()
    try:
        return SqsClient(endpoint, settings.region, credentials, pool=pool, connect_timeout=3,
                         read_timeout=settings.wait_time_seconds + 10, ca_bundle=ca_bundle)
    except ssl.SSLError as exc:
        # a file that is there but holds no certificate OpenSSL can read
        raise ConfigError(f"CA bundle {ca_bundle}: {exc.reason or 'not a PEM bundle'}") from None


def check_ca_bundle(settings: Settings) -> None:
    """For the boto3 client: a CA bundle that is not there is configuration, said at start.

    botocore would only fail at the first HTTPS call, with an error retried like a lost
    connection; the lean client checks the same in lean_client.
    """
    endpoint = settings.endpoint_url or _aws_endpoint(settings.region)
    if urlsplit(endpoint).scheme != "https":
        return
    import botocore.session

    # AWS_CA_BUNDLE first, then ca_bundle in the AWS config file, as botocore reads them
    ca_bundle = botocore.session.get_session().get_config_variable("ca_bundle")
    if ca_bundle:
        _check_ca_bundle(ca_bundle)


def _check_ca_bundle(path: str) -> None:
    if not os.path.exists(path):
        raise ConfigError(f"CA bundle not found (AWS_CA_BUNDLE or ca_bundle in the AWS config "
                          f"file): {path}")


class _EnvironmentCredentials:
    """Static keys from the environment, shaped like botocore's frozen credentials."""

    def __init__(self, access_key: str, secret_key: str, token: str | None) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token

    def get_frozen_credentials(self) -> _EnvironmentCredentials:
        return self


def _environment_decides(env: Mapping[str, str]) -> bool:
    """Static keys in the environment, and no profile or config file that could say otherwise."""
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        return False
    if any(env.get(name) for name in ("AWS_CREDENTIAL_EXPIRATION", "AWS_PROFILE",
                                      "AWS_DEFAULT_PROFILE")):
        return False
    config = env.get("AWS_CONFIG_FILE") or os.path.join("~", ".aws", "config")
    return not os.path.exists(os.path.expanduser(config))


def _plain_path(path: str) -> bool:
    return not path or (_PLAIN_PATH.fullmatch(path) is not None
                        and all(seg not in (".", "..") for seg in path.split("/")))


def _proxied(scheme: str, host: str) -> bool:
    """Whether an HTTP(S)_PROXY of the environment applies to this host (NO_PROXY aside)."""
    if not any(k.lower().endswith("_proxy") and k.lower() != "no_proxy" for k in os.environ):
        return False
    import urllib.request

    proxy = urllib.request.getproxies().get(scheme)
    return bool(proxy) and not urllib.request.proxy_bypass(host)


def _aws_endpoint(region: str) -> str:
    """botocore's standard SQS endpoint for a region (the aws and aws-cn partitions)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sqs.{region}.{suffix}"


def _default_ca_bundle() -> str | None:
    """The bundle botocore verifies with by default (certifi's, else its own cacert.pem)."""
    from botocore.httpsession import get_cert_path

    path = get_cert_path(True)
    return path if isinstance(path, str) else None

