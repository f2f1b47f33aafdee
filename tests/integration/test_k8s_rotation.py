"""The key rotation overlay (deploy/overlays/rotation) as the pod would run it: the base
Deployment's environment with the overlay's patch applied, its files where the Secret is
mounted (here a temporary directory). The rotated pod starts and writes with the new key;
the base's variable left beside the rotation one is refused, which is why the overlay
deletes it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack import ROOT, Stack, unique_bodies

pytestmark = pytest.mark.integration
MOUNT = "/var/run/secrets/login-etl"


def container_env(deployment: dict[str, Any]) -> list[dict[str, str]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["env"])


def rotated_env() -> list[dict[str, str]]:
    """The base's env with the overlay's strategic-merge patch (env entries merge by name;
    `$patch: delete` removes one)."""
    base = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "deploy" / "overlays" / "rotation" / "kustomization.yaml")
                             .read_text())
    assert overlay["resources"] == ["../../k8s"]
    (patch,) = overlay["patches"]
    env = {e["name"]: e for e in container_env(base)}
    for entry in container_env(yaml.safe_load(patch["patch"])):
        if entry.get("$patch") == "delete":
            env.pop(entry["name"])
        else:
            env[entry["name"]] = entry
    return list(env.values())


def as_files(env: list[dict[str, str]], secret_dir: Path) -> dict[str, str]:
    return {e["name"]: e["value"].replace(MOUNT, str(secret_dir)) for e in env}


def test_the_rotation_overlay_starts_and_writes_with_the_new_key(stack: Stack,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "masking-keys").write_text(f"k2:{secrets.token_hex(32)},k1:{stack.key}\n")
    (tmp_path / "database-url").write_text(stack.database_url + "\n")
    env = as_files(rotated_env(), tmp_path)
    assert set(env) == {"LOGIN_ETL_MASKING_KEYS_FILE", "LOGIN_ETL_DATABASE_URL_FILE"}
    stack.send(unique_bodies(20, prefix="rotated"))
    base = {k: v for k, v in stack.env().items()
            if k not in {"LOGIN_ETL_MASKING_KEY", "LOGIN_ETL_DATABASE_URL"}}
    stack.cli("run", "--until-empty", env={**base, **env})
    tokens = stack.query("SELECT masked_ip FROM user_logins")
    assert len(tokens) == 20 and all(t.startswith("h1.k2.") for (t,) in tokens)


def test_the_base_variable_beside_the_rotation_one_is_refused(stack: Stack,
                                                              tmp_path: Path) -> None:
    base_env = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    (tmp_path / "masking-key").write_text(stack.key)
    (tmp_path / "masking-keys").write_text(f"k2:{secrets.token_hex(32)},k1:{stack.key}")
    (tmp_path / "database-url").write_text(stack.database_url)
    env = as_files(container_env(base_env), tmp_path)
    env["LOGIN_ETL_MASKING_KEYS_FILE"] = str(tmp_path / "masking-keys")
    base = {k: v for k, v in stack.env().items()
            if k not in {"LOGIN_ETL_MASKING_KEY", "LOGIN_ETL_DATABASE_URL"}}
    result = stack.cli("run", "--until-empty", env={**base, **env}, check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
