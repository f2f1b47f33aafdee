"""Validate custom resources (KEDA's, the Prometheus Operator's) against their CRD schemas,
strictly.

kubernetes-validate knows only Kubernetes' built-in kinds and skips custom resources
with a warning. KEDA's ScaledObject and TriggerAuthentication, and the Prometheus
Operator's PodMonitor and PrometheusRule, are checked here with cloudcoil-models-keda and
cloudcoil-models-prometheus-operator: pydantic models generated from the CRDs' openAPIV3
schemas (types, enums, required fields). Like `kubernetes-validate --strict`, a key that the
schema does not define is an error: the models ignore unknown keys, so the input is
compared with what the model understood.

Trigger metadata is a free-form string map in the CRD (each scaler parses its own), so
for the aws-sqs-queue scaler the keys, required keys and numeric values are checked
against the parameter list of KEDA's documentation (written out below by hand).

Usage: python validate_crds.py FILE...   (other kinds in the files are left alone)
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from cloudcoil.models.keda import v1alpha1
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel, ValidationError

MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): v1alpha1.ScaledObject,
    ("keda.sh/v1alpha1", "ScaledJob"): v1alpha1.ScaledJob,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): v1alpha1.TriggerAuthentication,
    ("keda.sh/v1alpha1", "ClusterTriggerAuthentication"): v1alpha1.ClusterTriggerAuthentication,
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}

# https://keda.sh/docs/2.16/scalers/aws-sqs/ (parameter list)
AWS_SQS_KEYS = {
    "queueURL",
    "queueURLFromEnv",
    "queueLength",
    "activationQueueLength",
    "awsRegion",
    "awsEndpoint",
    "identityOwner",
    "scaleOnInFlight",
    "scaleOnDelayed",
}
AWS_SQS_INTEGERS = {"queueLength", "activationQueueLength"}
AWS_SQS_BOOLEANS = {"scaleOnInFlight", "scaleOnDelayed"}


def aws_sqs_trigger_errors(index: int, metadata: dict[str, Any]) -> list[str]:
    where = f"spec.triggers[{index}].metadata"
    errors = [f"{where}.{k}: not an aws-sqs-queue parameter" for k in metadata if k not in AWS_SQS_KEYS]
    if not (metadata.get("queueURL") or metadata.get("queueURLFromEnv")):
        errors.append(f"{where}: queueURL or queueURLFromEnv is required")
    if not metadata.get("awsRegion"):
        errors.append(f"{where}: awsRegion is required")
    for key in AWS_SQS_INTEGERS & metadata.keys():
        if not str(metadata[key]).isdigit():
            errors.append(f"{where}.{key}: {metadata[key]!r} is not a non-negative integer")
    for key in AWS_SQS_BOOLEANS & metadata.keys():
        if str(metadata[key]).lower() not in {"true", "false"}:
            errors.append(f"{where}.{key}: {metadata[key]!r} is not true or false")
    return errors


def unknown_keys(given: Any, understood: Any, path: str = "") -> list[str]:
    """Paths of keys in `given` that the model dropped (not in its schema)."""
    found: list[str] = []
    if isinstance(given, dict):
        understood = understood if isinstance(understood, dict) else {}
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in understood:
                found.append(where)
            else:
                found += unknown_keys(value, understood[key], where)
    elif isinstance(given, list) and isinstance(understood, list):
        for index, (a, b) in enumerate(zip(given, understood, strict=False)):
            found += unknown_keys(a, b, f"{path}[{index}]")
    return found


def check(doc: dict[str, Any]) -> list[str]:
    model = MODELS[(doc.get("apiVersion", ""), doc.get("kind", ""))]
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    errors = [f"{p}: not in the {doc['kind']} schema" for p in unknown_keys(doc, dumped)]
    if doc["kind"] in {"ScaledObject", "ScaledJob"}:
        for index, trigger in enumerate(doc["spec"].get("triggers", [])):
            if trigger.get("type") == "aws-sqs-queue":
                errors += aws_sqs_trigger_errors(index, trigger.get("metadata") or {})
    return errors


def main(paths: list[str]) -> int:
    failures = checked = 0
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
        for doc in docs:
            if (doc.get("apiVersion"), doc.get("kind")) not in MODELS:
                continue
            checked += 1
            name = f"{doc['kind'].lower()}/{doc.get('metadata', {}).get('name', '?')}"
            errors = check(doc)
            for error in errors:
                print(f"ERROR {path} {name}: {error}")
            if errors:
                failures += 1
            else:
                print(f"INFO {path} passed for resource {name} against its CRD schema")
    if not checked:
        print("ERROR no custom resource found", file=sys.stderr)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
