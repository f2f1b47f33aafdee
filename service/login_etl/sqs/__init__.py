"""SQS over its JSON protocol on keep-alive connections: the worker's hot path, lean.

Why not boto3 for these calls: a boto3 SQS call costs several times this client's CPU
(event hooks, endpoint rules, shape walking, a SigV4 signer built on email-style headers),
and against LocalStack every call also opens a new TCP connection: it answers
`Connection: close` unless the client asks for keep-alive (localstack#6557). Per message,
that would be most of the worker's CPU (docs/performance.md has the figures). This client
sends the same request (the JSON body and headers the boto3 serializer sends, signed with
SigV4, the signing key cached for the day) on pooled keep-alive connections, and reports
failures as the same botocore exceptions (ClientError with the parsed error;
EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError), so
both clients' failures are translated in one place (errors.py) into QueueError.

Credentials come from botocore's own provider chain (environment, profile, SSO, web
identity, container, IMDS) and are refreshed by it. Only the operations Queue uses exist
here; choose.make_client falls back to boto3 where this client does not go (proxies, FIPS or
dual-stack endpoint selection).

The package by concern: sigv4 (signing), http11 (HTTP/1.1 framing and the connection pool),
client (the operations), answers (the shape of an answer), errors (what a failure means),
choose (which client the settings call for, and building it).
"""

from login_etl.sqs.choose import lean_client
from login_etl.sqs.client import SqsClient

__all__ = ["SqsClient", "lean_client"]
