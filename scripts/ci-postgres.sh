#!/usr/bin/env bash
# Prepare a local PostgreSQL for the chatvault-vault PostgreSQL tests.
#
# Run as root on Debian 12 (fresh machine or not; the script is idempotent):
#   eval "$(bash scripts/ci-postgres.sh)"
# It installs PostgreSQL with apt if it is missing, starts the first cluster it finds (creating one if
# none exists), creates a login role `chatvault_test` (password `chatvault_test`, CREATEDB, so each test
# can create its own database) and a database of the same name. It also makes a throwaway test CA and
# a server certificate for IP 127.0.0.1 only (deliberately not "localhost", so the tests can show
# that sslmode=verify-full checks the name) in <data dir>/chatvault-ci-tls/, and turns `ssl = on`
# with them (plain connections keep working). It prints exactly two lines on stdout:
#   export CHATVAULT_TEST_POSTGRES_URL=postgres://chatvault_test:chatvault_test@127.0.0.1:5432/chatvault_test
#   export CHATVAULT_TEST_POSTGRES_CA=<data dir>/chatvault-ci-tls/ca.pem
# Everything else goes to stderr. The credentials and the CA are for a throwaway local test cluster
# only.
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

if ! command -v openssl >/dev/null 2>&1; then
    log "installing openssl with apt-get (for the test CA)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq openssl >&2
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

# TLS: a throwaway CA and a server certificate (EC P-256) for IP 127.0.0.1 only, kept while valid.
DATA_DIR=$(pg_lsclusters -h | awk -v v="${VERSION}" '$1==v && $2=="main" {print $6}')
TLS_DIR="${DATA_DIR}/chatvault-ci-tls"
NEW_CERT=0
if [ ! -s "${TLS_DIR}/ca.pem" ] || [ ! -s "${TLS_DIR}/server.key" ] || [ ! -s "${TLS_DIR}/server.crt" ] \
    || ! openssl x509 -in "${TLS_DIR}/server.crt" -noout -checkend 86400 >/dev/null 2>&1 \
    || ! openssl verify -CAfile "${TLS_DIR}/ca.pem" "${TLS_DIR}/server.crt" >/dev/null 2>&1; then
    log "creating a test CA and a server certificate for 127.0.0.1 in ${TLS_DIR}"
    rm -rf "${TLS_DIR}"
    NEW_CERT=1
    install -d -o postgres -g postgres -m 0700 "${TLS_DIR}"
    (
        cd "${TLS_DIR}"
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
            -days 3650 -subj "/CN=chatvault CI test CA" -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" >&2
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
            -subj "/CN=127.0.0.1" -keyout server.key -out server.csr >&2
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1" > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
            -days 3650 -extfile server.ext -out server.crt >&2
        rm -f server.csr server.ext ca.srl ca.key  # nothing more is ever signed with this CA
        chown postgres:postgres ca.pem server.key server.crt
        chmod 0600 server.key
        chmod 0644 ca.pem server.crt
    )
fi
if [ "${NEW_CERT}" = 1 ] \
    || [ "$(su postgres -c "psql -p ${PORT} -qtAc 'show ssl_cert_file'")" != "${TLS_DIR}/server.crt" ] \
    || [ "$(su postgres -c "psql -p ${PORT} -qtAc 'show ssl'")" != "on" ]; then
    log "enabling ssl with the test certificate (reload)"
    {
        echo "ALTER SYSTEM SET ssl_cert_file = '${TLS_DIR}/server.crt';"
        echo "ALTER SYSTEM SET ssl_key_file = '${TLS_DIR}/server.key';"
        echo "ALTER SYSTEM SET ssl = on;"
        echo "SELECT pg_reload_conf();"
    } | psql_admin
fi
# Check what the tests rely on: verify-full to 127.0.0.1 works with the CA (the reload is
# asynchronous: a few tries).
tls_ok=0
for _ in $(seq 1 20); do
    if PGPASSWORD="${PASSWORD}" psql "host=127.0.0.1 port=${PORT} user=${ROLE} dbname=${DB} sslmode=verify-full sslrootcert=${TLS_DIR}/ca.pem" \
        -qtAc 'select ssl from pg_stat_ssl where pid = pg_backend_pid()' 2>/dev/null | grep -qx t; then
        tls_ok=1
        break
    fi
    sleep 0.5
done
if [ "${tls_ok}" != 1 ]; then
    log "ERROR: PostgreSQL does not accept sslmode=verify-full with ${TLS_DIR}/ca.pem (see the server log)"
    exit 1
fi

echo "export CHATVAULT_TEST_POSTGRES_URL=postgres://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/${DB}"
echo "export CHATVAULT_TEST_POSTGRES_CA=${TLS_DIR}/ca.pem"
