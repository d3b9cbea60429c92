#!/usr/bin/env bash
# Prepare a local PostgreSQL for the chatvault-vault PostgreSQL tests.
#
# Run as root on Debian 12 (fresh machine or not; the script is idempotent):
#   eval "$(bash scripts/ci-postgres.sh)"
# It installs PostgreSQL with apt if it is missing, starts the first cluster it finds (creating one if
# none exists), creates a login role `chatvault_test` (password `chatvault_test`, CREATEDB, so each test
# can create its own database) and a database of the same name, and prints exactly one line on stdout:
#   export CHATVAULT_TEST_POSTGRES_URL=postgres://chatvault_test:chatvault_test@127.0.0.1:5432/chatvault_test
# Everything else goes to stderr. The credentials are for a throwaway local test cluster only.
set -euo pipefail

ROLE=chatvault_test
PASSWORD=chatvault_test
DB=chatvault_test

log() { echo "ci-postgres: $*" >&2; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

# Pick the newest installed major version.
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^${VERSION} main$"; then
    log "creating cluster ${VERSION}/main"
    pg_createcluster "${VERSION}" main >&2
fi
PORT=$(pg_lsclusters -h | awk -v v="${VERSION}" '$1==v && $2=="main" {print $3}')
STATUS=$(pg_lsclusters -h | awk -v v="${VERSION}" '$1==v && $2=="main" {print $4}')
if [ "${STATUS}" != "online" ]; then
    log "starting cluster ${VERSION}/main on port ${PORT}"
    pg_ctlcluster "${VERSION}" main start >&2
fi

# Wait until the server accepts connections (max ~30 s).
for _ in $(seq 1 60); do
    if su postgres -c "psql -p ${PORT} -qtAc 'select 1'" >/dev/null 2>&1; then break; fi
    sleep 0.5
done

psql_admin() { su postgres -c "psql -p ${PORT} -v ON_ERROR_STOP=1 -qtA" >&2; }

if ! su postgres -c "psql -p ${PORT} -qtAc \"select 1 from pg_roles where rolname='${ROLE}'\"" | grep -q 1; then
    log "creating role ${ROLE}"
    echo "CREATE ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';" | psql_admin
else
    echo "ALTER ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';" | psql_admin
fi
if ! su postgres -c "psql -p ${PORT} -qtAc \"select 1 from pg_database where datname='${DB}'\"" | grep -q 1; then
    log "creating database ${DB}"
    echo "CREATE DATABASE ${DB} OWNER ${ROLE};" | psql_admin
fi

# Many vault processes x pool size in the concurrency tests: make sure there are enough connections.
MAXCONN=$(su postgres -c "psql -p ${PORT} -qtAc 'show max_connections'")
if [ "${MAXCONN}" -lt 200 ]; then
    log "raising max_connections to 300 (restart)"
    echo "ALTER SYSTEM SET max_connections = 300;" | psql_admin
    pg_ctlcluster "${VERSION}" main restart >&2
    for _ in $(seq 1 60); do
        if su postgres -c "psql -p ${PORT} -qtAc 'select 1'" >/dev/null 2>&1; then break; fi
        sleep 0.5
    done
fi

echo "export CHATVAULT_TEST_POSTGRES_URL=postgres://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/${DB}"
