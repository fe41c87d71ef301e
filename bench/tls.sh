#!/usr/bin/env bash
# Measures what TLS termination adds to a request's latency, for floodwall
# and for nginx, in one run: floodwall plain, floodwall with server.tls
# (rustls), nginx plain and nginx with ssl (OpenSSL), all real processes in
# front of the same instant backend, loaded in turn at one fixed open-loop
# rate over HTTP/1.1 keep-alive connections. Reports p50/p99 per contender
# and round and the added p99 of TLS = p99(TLS) - p99(plain) per gateway.
#
#   bench/tls.sh [extra flags for `floodwall-bench tls`, e.g. --rate 4000 --rounds 5]
#
# Installs nginx with apt-get if missing (as bench/peers.sh does), builds
# floodwall and floodwall-bench in release, and runs `floodwall-bench tls`,
# which makes a CA and a certificate for the run (rcgen), starts the
# floodwalls and one nginx on free loopback ports and stops them by PID.
# Results land in bench/results/tls.{md,json}.
#
# Environment: OUT (results dir), FLOODWALL and FLOODWALL_BENCH (paths to
# the binaries; both built in release if unset).
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
need_commands nginx
NGINX=$(sbin nginx)

if [ -z "${FLOODWALL:-}" ] || [ -z "${FLOODWALL_BENCH:-}" ]; then
  cargo build --release -p floodwall -p floodwall-bench --locked
fi
FLOODWALL=${FLOODWALL:-target/release/floodwall}
FLOODWALL_BENCH=${FLOODWALL_BENCH:-target/release/floodwall-bench}
"$FLOODWALL_BENCH" tls --floodwall "$FLOODWALL" --nginx "$NGINX" --out "${OUT:-bench/results}" "$@"
