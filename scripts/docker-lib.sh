# shellcheck shell=bash
# Sourced by scripts/docker-image.sh and scripts/compose-test.sh: a local dockerd and the
# Debian bookworm base image that every local image is built FROM.
#
# No registry image can be pulled on these machines, so the base is made here with
# debootstrap + `docker import` (Debian bookworm, Python 3.11) and cached as a tarball;
# dockerd keeps its images and build cache under the same cache directory, so a second
# run rebuilds nothing.
#
# The caller defines log() and die(). Environment: LOGIN_ETL_CACHE (default
# /root/.cache/login-etl), BASE_TAG, DEBIAN_MIRROR, KEEP_BASE (1: reuse an imported base).

CACHE=${LOGIN_ETL_CACHE:-/root/.cache/login-etl}
BASE_TAG=${BASE_TAG:-login-etl-base:bookworm}
BASE_TAR=$CACHE/debian-bookworm-python3-base.tar
STARTED_DOCKERD_PID=""
mkdir -p "$CACHE"

apt_install() {
    # Another apt run (a parallel setup script) may hold the dpkg lock for a while.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

ensure_dockerd() {
    if docker info >/dev/null 2>&1; then
        log "dockerd already running"
        return
    fi
    if ! command -v dockerd >/dev/null; then
        log "installing Debian's docker.io"
        apt_install docker.io
    fi
    mkdir -p "$CACHE/docker-data"
    # No default bridge and no iptables rules on the host: `docker run` uses --network
    # host, compose makes its own bridge network and publishes ports with docker-proxy.
    log "starting dockerd (data root $CACHE/docker-data)"
    dockerd --host unix:///var/run/docker.sock --data-root "$CACHE/docker-data" \
        --iptables=false --ip6tables=false --bridge=none \
        --pidfile "$CACHE/dockerd.pid" >"$CACHE/dockerd.log" 2>&1 &
    STARTED_DOCKERD_PID=$!
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || { tail -20 "$CACHE/dockerd.log"; die "dockerd exited"; }
        sleep 1
    done
    die "dockerd did not answer within 60 s (log: $CACHE/dockerd.log)"
}

# Stops the dockerd that ensure_dockerd started, if any (KEEP_DOCKERD=1 leaves it running).
stop_started_dockerd() {
    if [[ -n "$STARTED_DOCKERD_PID" && "${KEEP_DOCKERD:-0}" != 1 ]]; then
        # Another script may have found this dockerd running and still use it.
        if [[ -n "$(docker ps -q 2>/dev/null)" ]]; then
            log "leaving dockerd (pid $STARTED_DOCKERD_PID) running: other containers use it"
            return
        fi
        log "stopping the dockerd this script started (pid $STARTED_DOCKERD_PID)"
        kill "$STARTED_DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
}

debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    # The first non-security Debian URI apt uses here (deb822 or one-line form).
    local uri
    uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
              /etc/apt/sources.list.d/*.list 2>/dev/null \
          | grep -v security | grep -oE 'https?://[^ ]*/debian/?' | head -1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base_tarball() {
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
    local mirror rootfs
    mirror=$(debian_mirror)
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    log "debootstrap bookworm (minbase + python3, python3-venv, ca-certificates) from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log"; rm -rf "$rootfs"; die "debootstrap failed"; }
    # This machine reaches PyPI through a TLS-intercepting proxy whose CA is in
    # the host's bundle only. The base (local-only, never pushed) trusts the
    # host's extra CAs so that `pip install` works inside `docker build`.
    python3 - "$rootfs" <<'PY'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
pat = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
bundle = "etc/ssl/certs/ca-certificates.crt"
host = pat.findall(pathlib.Path("/" + bundle).read_text())
base = set(pat.findall((root / bundle).read_text()))
for i, cert in enumerate(c for c in host if c not in base):
    (root / f"usr/local/share/ca-certificates/host-extra-{i}.crt").write_text(cert + "\n")
PY
    chroot "$rootfs" update-ca-certificates >/dev/null
    # Trim what a container never needs.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/log/* "$rootfs"/tmp/* \
        "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
    tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.$$.part" .
    mv "$BASE_TAR.$$.part" "$BASE_TAR"
    rm -rf "$rootfs"
    log "base tarball cached: $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
}

ensure_base() {
    if [[ "${KEEP_BASE:-1}" == 1 ]] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
        log "base image $BASE_TAG present"
        return
    fi
    # Two scripts starting at once build the base once: the second waits here.
    local lock
    exec {lock}>"$CACHE/base.lock"
    flock "$lock"
    if [[ "${KEEP_BASE:-1}" == 1 ]] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
        log "base image $BASE_TAG present"
        exec {lock}>&-
        return
    fi
    [[ -s "$BASE_TAR" ]] || build_base_tarball
    log "docker import $BASE_TAR -> $BASE_TAG"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        "$BASE_TAR" "$BASE_TAG" >/dev/null
    exec {lock}>&-
}

# The project's Dockerfile on the local base (the Dockerfile's default base is the
# official python:3.11-slim). --network host: pip reaches PyPI from the build.
build_service_image() {
    local image=$1 t out
    [[ -f "$ROOT/README.md" ]] || die "README.md missing (pyproject.toml names it as readme)"
    log "docker build -t $image --build-arg BASE_IMAGE=$BASE_TAG"
    t=$(date +%s)
    out=$(mktemp "$CACHE/docker-build.XXXXXX.log")
    DOCKER_BUILDKIT=0 docker build --force-rm --network host --build-arg "BASE_IMAGE=$BASE_TAG" \
        -t "$image" "$ROOT" >"$out" 2>&1 \
        || { tail -40 "$out"; rm -f "$out"; die "docker build of $image failed"; }
    rm -f "$out"
    log "built in $(($(date +%s) - t)) s"
}
