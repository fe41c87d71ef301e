#!/usr/bin/env bash
# Runs the axum-postgres example against a throwaway PostgreSQL: initdb into
# a temp dir, pg_ctl start on a free loopback port (as the tests do, with
# the unix socket in the same dir), then the service; everything is
# stopped and deleted on exit. Extra arguments go to the example, e.g.
#   crates/floodwall-tower/examples/axum-postgres/run.sh --protection tower:8
set -euo pipefail
cd "$(dirname "$0")/../../../.."

bin="${FLOODWALL_PG_BIN:-}"
if [ -z "$bin" ]; then
    if command -v initdb >/dev/null; then
        bin="$(dirname "$(command -v initdb)")"
    else
        bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    fi
fi
[ -x "$bin/initdb" ] || { echo "initdb not found: run scripts/install-deps.sh or set FLOODWALL_PG_BIN" >&2; exit 1; }

dir="$(mktemp -d /tmp/floodwall-example-pg.XXXXXX)"
as=()
if [ "$(id -u)" = 0 ]; then
    user=postgres; id -u postgres >/dev/null 2>&1 || user=nobody
    chown "$user" "$dir"; as=(runuser -u "$user" --)
fi
cleanup() {
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 50
fsync = off
CONF
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port" start >/dev/null
echo "postgres on 127.0.0.1:$port ($dir)"

cargo run --release -p floodwall-tower --example axum-postgres -- \
    --dsn "host=127.0.0.1 port=$port user=postgres dbname=postgres" "$@"
