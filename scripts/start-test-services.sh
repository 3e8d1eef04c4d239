#!/usr/bin/env bash
# Starts the real services the tests use and prints their settings as KEY=value lines
# (the Makefile exports them to pytest). Idempotent: a running service is left alone.
set -euo pipefail

log() { echo "start-test-services: $*" >&2; }

# PostgreSQL: the Debian cluster, a login role for the tests over TCP on loopback.
if command -v pg_lsclusters >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    cluster=$(pg_lsclusters -h | head -n 1 || true)
    if [ -z "$cluster" ]; then
        ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
        log "creating PostgreSQL cluster $ver/main"
        pg_createcluster "$ver" main >/dev/null
        cluster=$(pg_lsclusters -h | head -n 1)
    fi
    read -r ver name port status _ <<<"$cluster"
    if [ "$status" != "online" ]; then
        log "starting PostgreSQL $ver/$name on port $port"
        pg_ctlcluster "$ver" "$name" start >&2  # stdout is the KEY=value output
    fi
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p "$port" && break
        sleep 0.2
    done
    su postgres -c "psql -q -p $port -v ON_ERROR_STOP=1" >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'spoolvault_test') THEN
        CREATE ROLE spoolvault_test LOGIN CREATEDB PASSWORD 'spoolvault_test';
    END IF;
    -- The tests drop their scratch databases WITH (FORCE), which must also end an
    -- autovacuum worker busy in one (not a process of this role: refused without this).
    IF NOT pg_has_role('spoolvault_test', 'pg_signal_backend', 'MEMBER') THEN
        GRANT pg_signal_backend TO spoolvault_test;
    END IF;
END
$$;
SQL
    echo "SPOOLVAULT_TEST_PG_URL=postgresql://spoolvault_test:spoolvault_test@127.0.0.1:$port/postgres"
else
    log "PostgreSQL not available (needs root and the postgresql package); its tests will be skipped"
fi
