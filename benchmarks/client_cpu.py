"""CPU per SQS call of each client login-etl can run with, side by side on one queue.

    python benchmarks/client_cpu.py [--calls 400] [--rounds 3] [--clients lean,boto3]

Each client is built the way the worker builds it (sqs.choose.make_client, LOGIN_ETL_SQS_CLIENT),
and makes the same calls against the same LocalStack queue: GetQueueAttributes, an empty
ReceiveMessage, and a receive of 10 + DeleteMessageBatch of 10. The clients alternate over
the rounds and the median CPU time of this process per call is printed (wall time includes
LocalStack, which shares the machine, so CPU is the figure that belongs to the client).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENDPOINT = os.environ.get("LOGIN_ETL_TEST_SQS", "http://127.0.0.1:4566")


def make(kind: str) -> Any:
    from login_etl.settings import Settings
    from login_etl.sqs.choose import make_client

    settings = Settings.from_env({"LOGIN_ETL_QUEUE_URL": f"{ENDPOINT}/000000000000/q",
                                  "LOGIN_ETL_SQS_CLIENT": kind,
                                  "LOGIN_ETL_MASKING_KEY": "00" * 32})
    return make_client(settings, pool=4)


def per_call(fn: Callable[[], Any], calls: int) -> float:
    fn()
    started = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="lean,boto3")
    args = parser.parse_args()
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    kinds = args.clients.split(",")
    clients = {kind: make(kind) for kind in kinds}
    admin = make("boto3")
    url = admin.create_queue(QueueName=f"bench-client-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    url = f"{ENDPOINT}/{url.split('/', 3)[3]}"
    bodies = [{"Id": str(i), "MessageBody": '{"user_id": "u", "ip": "10.0.0.1"}'}
              for i in range(10)]
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for round_ in range(args.rounds):
            for kind in kinds if round_ % 2 == 0 else reversed(kinds):
                client = clients[kind]

                def attributes(c: Any = client) -> Any:
                    return c.get_queue_attributes(QueueUrl=url, AttributeNames=[
                        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])

                def empty_receive(c: Any = client) -> Any:
                    return c.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                             WaitTimeSeconds=0)

                def receive_and_delete(c: Any = client) -> None:
                    got = c.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                            WaitTimeSeconds=0, VisibilityTimeout=30)
                    messages = got.get("Messages") or []
                    if messages:
                        c.delete_message_batch(QueueUrl=url, Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(messages)])

                batches = args.calls // 4
                for _ in range(batches + 1):
                    admin.send_message_batch(QueueUrl=url, Entries=bodies)
                for op, fn, calls in (("GetQueueAttributes", attributes, args.calls),
                                      ("receive 10 + delete 10", receive_and_delete, batches),
                                      ("ReceiveMessage (empty)", empty_receive, args.calls)):
                    results.setdefault((kind, op), []).append(per_call(fn, calls))
                print(f"  round {round_ + 1}: {kind} done", file=sys.stderr, flush=True)
    finally:
        admin.delete_queue(QueueUrl=url)
    print(f"client CPU per call, median of {args.rounds} rounds (ms)")
    ops = sorted({op for _, op in results}, key=lambda op: list(results).index((kinds[0], op)))
    print(f"  {'call':28}" + "".join(f"{kind:>10}" for kind in kinds))
    for op in ops:
        cells = "".join(f"{statistics.median(results[(kind, op)]) * 1000:>10.3f}"
                        for kind in kinds)
        print(f"  {op:28}{cells}")


if __name__ == "__main__":
    main()
