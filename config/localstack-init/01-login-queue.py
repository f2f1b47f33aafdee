"""LocalStack READY hook: create the login queues and load the sample events.

LocalStack runs every ``*.py`` file in /etc/localstack/init/ready.d inside its
own interpreter (boto3 is there) once SQS answers. The same file also runs as a
plain script (``python3 01-login-queue.py``) against any SQS endpoint, which is
how scripts/docker-image.sh uses it. It is executed with an empty globals dict
by LocalStack, so everything is top-level code (no ``__main__`` guard).

Creates ``login-queue-dlq`` and ``login-queue`` whose RedrivePolicy sends a
message to the DLQ after 10 receives (generous, so crash redeliveries are not
taken for poison messages), then sends each element of the JSON array in
LOGIN_ETL_SAMPLE_FILE as one message body (json.dumps of the element).

Environment (all optional):
  LOGIN_ETL_INIT_ENDPOINT   SQS endpoint, default http://localhost:4566
  LOGIN_ETL_INIT_QUEUE      source queue name, default login-queue (DLQ: <name>-dlq)
  LOGIN_ETL_SAMPLE_FILE     JSON array to load, default /opt/login-etl/sample_data.json;
                            an empty value or a missing file loads nothing
"""

import json
import os

import boto3

endpoint = os.environ.get("LOGIN_ETL_INIT_ENDPOINT", "http://localhost:4566")
queue_name = os.environ.get("LOGIN_ETL_INIT_QUEUE", "login-queue")
sample_file = os.environ.get("LOGIN_ETL_SAMPLE_FILE", "/opt/login-etl/sample_data.json")

sqs = boto3.client(
    "sqs",
    endpoint_url=endpoint,
    region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
)

dlq_url = sqs.create_queue(
    QueueName=f"{queue_name}-dlq",
    Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)},
)["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
queue_url = sqs.create_queue(
    QueueName=queue_name,
    Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 10}),
    },
)["QueueUrl"]
print(f"login-etl init: {queue_url} -> DLQ {dlq_arn} after 10 receives", flush=True)

if sample_file and os.path.exists(sample_file):
    with open(sample_file, encoding="utf-8") as fh:
        events = json.load(fh)
    if not isinstance(events, list):
        raise SystemExit(f"{sample_file}: expected a JSON array")
    for start in range(0, len(events), 10):
        chunk = events[start : start + 10]
        entries = [{"Id": str(i), "MessageBody": json.dumps(event)} for i, event in enumerate(chunk)]
        failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
        if failed:
            raise SystemExit(f"login-etl init: send_message_batch failed: {failed}")
    print(f"login-etl init: sent {len(events)} messages from {sample_file}", flush=True)
