"""The bare loops the benchmark compares login-etl with, each as its own process:

    python benchmarks/ceiling.py QUEUE_URL MESSAGES THREADS [boto3|lean]

receive(10) + delete_message_batch from THREADS threads until MESSAGES are deleted, no
processing: with plain boto3 (the CPU yardstick), or with login-etl's own kept-alive SQS
client (the queue's own limit, the end-to-end yardstick). It imports nothing else of the
benchmark (the benchmark's own modules import psycopg, which would put its start-up on the
loop's bill). Prints {"deleted": n, "loop_seconds": s}.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any


def client(kind: str, endpoint: str, threads: int) -> Any:
    if kind == "lean":
        from login_etl.settings import Settings
        from login_etl.sqs.choose import make_client

        return make_client(Settings.from_env({"LOGIN_ETL_QUEUE_URL": f"{endpoint}/0/q",
                                              "LOGIN_ETL_SQS_CLIENT": "lean",
                                              "LOGIN_ETL_MASKING_KEY": "00" * 32}),
                           pool=threads + 2)
    import boto3
    from botocore.config import Config

    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(max_pool_connections=threads + 2))


def main(queue_url: str, messages: int, threads: int, kind: str) -> None:
    sqs = client(kind, os.environ.get("LOGIN_ETL_BENCH_SQS", "http://127.0.0.1:4566"), threads)
    deleted = 0
    lock = threading.Lock()
    started = time.perf_counter()

    def loop() -> None:
        nonlocal deleted
        while deleted < messages:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=1, VisibilityTimeout=60).get("Messages", [])
            if not got:
                continue
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                       for i, m in enumerate(got)]
            response = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            with lock:
                deleted += len(entries) - len(response.get("Failed", ()))

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    print(json.dumps({"deleted": deleted, "loop_seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
         sys.argv[4] if len(sys.argv) > 4 else "boto3")
