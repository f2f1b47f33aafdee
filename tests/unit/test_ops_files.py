"""The operating files agree with each other: documentation links resolve, the default
kustomization carries no Secret, the LocalStack pins are the ones docs/testing.md names."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#([^)\s]+))?\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' dropped, spaces to '-'."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    for target, anchor in LINK.findall(doc.read_text()):
        if target.startswith("http"):
            continue
        path = (doc.parent / target).resolve()
        assert path.exists(), f"{doc.name}: link to missing {target}"
        if anchor:
            assert anchor in anchors(path), f"{doc.name}: no heading #{anchor} in {target}"


def kustomization_documents(base: Path) -> list[dict]:
    """What `kubectl kustomize` renders from its resources (files and nested directories)."""
    spec = yaml.safe_load((base / "kustomization.yaml").read_text())
    documents: list[dict] = []
    for resource in spec.get("resources", []):
        path = base / resource
        if path.is_dir():
            documents += kustomization_documents(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def test_default_kustomization_renders_no_secret() -> None:
    kinds = [d["kind"] for d in kustomization_documents(ROOT / "deploy" / "k8s")]
    assert "Deployment" in kinds
    assert "Secret" not in kinds, "kubectl apply -k deploy/k8s would overwrite the real key"


def test_localstack_pins_are_documented() -> None:
    script = (ROOT / "scripts" / "localstack.sh").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    standin = (ROOT / "docker" / "standins" / "localstack" / "Dockerfile").read_text()
    host = re.search(r"^VERSION=(\S+)", script, re.M)
    image = re.search(r"localstack/localstack:([\w.]+)", compose)
    core = re.search(r"LOCALSTACK_VERSION=(\S+)", standin)
    assert host and image and core
    testing = (ROOT / "docs" / "testing.md").read_text()
    for pin in (f"`localstack-core` {host[1]}", f"`localstack/localstack:{image[1]}`",
                f"`localstack-core` {core[1]}"):
        assert pin in testing, f"docs/testing.md does not name {pin}"
    assert core[1].startswith(image[1]), "the compose stand-in installs another version than the image tag"


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((ROOT / "config" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_runbook_section() -> None:
    headings = anchors(ROOT / "docs" / "runbook.md")
    rules = alert_rules()
    assert len(rules) >= 9
    for rule in rules:
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", f"{rule['alert']}: runbook_url {url!r}"
        assert anchor == rule["alert"].lower() and anchor in headings, \
            f"{rule['alert']}: no heading #{anchor} in docs/runbook.md"


def test_every_alert_selects_the_job_the_manifests_produce() -> None:
    for rule in alert_rules():
        for selector in re.findall(r"(login_etl_\w+|\bup)\{([^}]*)\}", rule["expr"]):
            assert 'job="login-etl"' in selector[1], f"{rule['alert']}: {selector}"
        assert not re.search(r"login_etl_\w+(?![\w{])", rule["expr"]), \
            f"{rule['alert']}: a metric without a job selector"


def test_the_prometheusrule_is_generated_from_the_current_alerts() -> None:
    spec = importlib.util.spec_from_file_location("prometheusrule", ROOT / "scripts" / "prometheusrule.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = (ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml").read_text()
    assert written == module.render(), "stale: run python scripts/prometheusrule.py"
    groups = yaml.safe_load(written)["spec"]["groups"]
    assert [r["alert"] for g in groups for r in g["rules"]] == [r["alert"] for r in alert_rules()]


def test_the_podmonitor_produces_the_job_the_rules_select() -> None:
    (monitor,) = kustomization_documents(ROOT / "deploy" / "k8s" / "monitoring")[:1]
    assert monitor["kind"] == "PodMonitor"
    deployment = next(d for d in kustomization_documents(ROOT / "deploy" / "k8s")
                      if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels[monitor["spec"]["jobLabel"]] == "login-etl"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def test_connections_at_the_most_replicas_fit_the_servers_default_limit() -> None:
    """PostgreSQL's default max_connections is 100, 3 of them reserved for superusers; at
    KEDA's maximum plus the rolling update's surge every replica holds its whole pool."""
    docs = kustomization_documents(ROOT / "deploy" / "k8s")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    pool = int(config.get("LOGIN_ETL_DB_POOL_SIZE") or int(config["LOGIN_ETL_POLLERS"]) + 1)
    surge = int(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"])
    most = (scaled["spec"]["maxReplicaCount"] + surge) * pool
    assert most <= 100 - 3 - 10, f"{most} connections at the most replicas; leave 10 for admins"
    limit = re.search(r"CONNECTION LIMIT (\d+)", (ROOT / "docs" / "operations.md").read_text())
    assert limit and most <= int(limit[1]) <= 100 - 3


def test_the_operations_guide_policies_are_json() -> None:
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        assert json.loads(block)["Version"] == "2012-10-17"


def test_the_example_secrets_verify_full_has_its_ca_mounted() -> None:
    from urllib.parse import parse_qs, urlsplit

    secret = yaml.safe_load((ROOT / "deploy" / "k8s" / "examples" / "secret.example.yaml").read_text())
    deployment = next(d for d in kustomization_documents(ROOT / "deploy" / "k8s")
                      if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "login-etl"]
    (mount,) = [m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == volume["name"]]
    query = parse_qs(urlsplit(secret["stringData"]["database-url"]).query)
    assert query["sslmode"] == ["verify-full"]
    (ca,) = query["sslrootcert"]
    directory, _, key = ca.rpartition("/")
    assert directory == mount["mountPath"] and key in secret["stringData"]
