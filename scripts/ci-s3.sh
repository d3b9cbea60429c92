#!/usr/bin/env bash
# Start a local S3-protocol server for the chatvault S3, crash and fault-injection tests.
#
#   eval "$(bash scripts/ci-s3.sh)"
#
# Installs moto's S3 server (PyPI `moto[server]`, pinned) into a private virtualenv when missing,
# starts it on 127.0.0.1 in the background when it is not already answering, waits until it
# answers, creates the test bucket, and prints `export` lines on stdout (and nothing else):
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, CHATVAULT_TEST_S3,
#   CHATVAULT_TEST_S3_BUCKET
# Everything else goes to stderr. Idempotent: running it twice reuses the running server.
# The credentials are dummies: moto accepts any. Nothing listens beyond 127.0.0.1.
#
# Settings (env): CHATVAULT_S3_PORT (default 9787), CHATVAULT_S3_DIR (default
# /tmp/chatvault-s3: virtualenv, log, pid file), CHATVAULT_S3_PYTHON (default python3).
set -euo pipefail

PORT="${CHATVAULT_S3_PORT:-9787}"
DIR="${CHATVAULT_S3_DIR:-/tmp/chatvault-s3}"
PYTHON="${CHATVAULT_S3_PYTHON:-python3}"
MOTO_VERSION="5.2.5"
BUCKET="chatvault-test"
VENV="${DIR}/venv-moto-${MOTO_VERSION}"
ENDPOINT="http://127.0.0.1:${PORT}"

log() { echo "ci-s3: $*" >&2; }

mkdir -p "${DIR}"

if [ ! -x "${VENV}/bin/moto_server" ]; then
    if ! "${PYTHON}" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "installing python3-venv with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq python3-venv >&2
    fi
    log "installing moto[server]==${MOTO_VERSION} into ${VENV}"
    rm -rf "${VENV}"
    "${PYTHON}" -m venv "${VENV}" >&2
    "${VENV}/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==${MOTO_VERSION}" >&2
fi

# Answers at all (any HTTP status)?
answering() {
    "${VENV}/bin/python" - "${ENDPOINT}" <<'EOF' >/dev/null 2>&1
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/", timeout=2)
except urllib.error.HTTPError:
    pass
EOF
}

if answering; then
    log "S3 server already answering on ${ENDPOINT}"
else
    log "starting moto_server on ${ENDPOINT} (log: ${DIR}/moto.log)"
    # setsid + nohup: the server outlives this script (and the shell that evals its output).
    setsid nohup "${VENV}/bin/moto_server" -H 127.0.0.1 -p "${PORT}" \
        >"${DIR}/moto.log" 2>&1 </dev/null &
    echo $! >"${DIR}/moto.pid"
    for _ in $(seq 1 120); do
        if answering; then break; fi
        sleep 0.5
    done
    if ! answering; then
        log "moto_server did not answer within 60 s; its log:"
        tail -n 30 "${DIR}/moto.log" >&2 || true
        exit 1
    fi
fi

# moto does not check signatures, so a plain PUT creates the bucket (us-east-1: no body needed).
# An existing bucket is fine (idempotent).
"${VENV}/bin/python" - "${ENDPOINT}" "${BUCKET}" <<'EOF' >&2
import sys, urllib.request, urllib.error
endpoint, bucket = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", data=b"")
try:
    urllib.request.urlopen(req, timeout=10)
    print(f"ci-s3: bucket {bucket} ready")
except urllib.error.HTTPError as e:
    if e.code == 409:
        print(f"ci-s3: bucket {bucket} exists")
    else:
        raise
EOF

cat <<EOF
export AWS_ACCESS_KEY_ID=chatvault-test
export AWS_SECRET_ACCESS_KEY=chatvault-test-secret
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=${ENDPOINT}
export CHATVAULT_TEST_S3=1
export CHATVAULT_TEST_S3_BUCKET=${BUCKET}
EOF
