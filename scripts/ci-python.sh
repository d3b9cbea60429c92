#!/usr/bin/env bash
# Build the Python package `chatvault` (python/, maturin with uniffi bindings of chatvault-ffi)
# and run its pytest suite against a real `chatvault-vault` process.
#
#   bash scripts/ci-python.sh
#
# Steps: a virtualenv (default .venv at the workspace root, git-ignored) with maturin and pytest
# (pinned below); the vault binary target/debug/chatvault-vault (built with cargo when missing,
# e.g. when this runs before or without `cargo nextest run --workspace`); `maturin build` in the
# dev profile (debug, like the test build, so the shared dependencies are reused where their
# features match) into target/wheels; the wheel installed into the virtualenv; pytest.
#
# With CI=true every failure to set something up fails the script (a suite that skips proves
# nothing); elsewhere a missing Python or virtualenv support is reported and the script exits 0.
#
# Settings (env): CHATVAULT_PY_VENV (default .venv), CHATVAULT_PYTHON (default python3),
# CHATVAULT_VAULT_BIN (default target/debug/chatvault-vault).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="$(realpath -m "${CHATVAULT_PY_VENV:-.venv}")"
PYTHON="${CHATVAULT_PYTHON:-python3}"
MATURIN_VERSION="1.16.0"
PYTEST_VERSION="9.2.0"
export CHATVAULT_VAULT_BIN="${CHATVAULT_VAULT_BIN:-$PWD/target/debug/chatvault-vault}"

log() { echo "ci-python: $*" >&2; }
cannot() {
    if [ "${CI:-}" = "true" ]; then
        log "ERROR: $*"
        exit 1
    fi
    log "skipped (not in CI): $*"
    exit 0
}

start=$(date +%s)
command -v "${PYTHON}" >/dev/null 2>&1 || cannot "${PYTHON} not found"
if ! "${PYTHON}" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ] && command -v apt-get >/dev/null 2>&1; then
        log "installing python3-venv with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2 || cannot "python3-venv could not be installed"
    else
        cannot "${PYTHON} has no venv/ensurepip (install python3-venv)"
    fi
fi
if [ ! -x "${VENV}/bin/python" ]; then
    log "creating ${VENV}"
    "${PYTHON}" -m venv "${VENV}" || cannot "could not create the virtualenv ${VENV}"
fi
"${VENV}/bin/python" -m pip install -q --disable-pip-version-check \
    "maturin==${MATURIN_VERSION}" "pytest==${PYTEST_VERSION}" \
    || cannot "pip could not install maturin and pytest"
# --setup-only: the virtualenv and its tools, nothing else (.ci/run does it while clippy compiles).
[ "${1:-}" != --setup-only ] || exit 0

if [ ! -x "${CHATVAULT_VAULT_BIN}" ]; then
    log "building the vault binary"
    cargo build -p chatvault-vault
fi

log "building the wheel (dev profile)"
rm -f target/wheels/chatvault-*.whl
(cd python && "${VENV}/bin/maturin" build --out ../target/wheels)
"${VENV}/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
    target/wheels/chatvault-*.whl

log "running pytest"
set +e
(cd python && "${VENV}/bin/python" -m pytest -q)
rc=$?
set -e
log "took $(( $(date +%s) - start )) s"
# pytest's 5 is "no tests collected": a failure here.
exit "${rc}"
