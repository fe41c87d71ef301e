#!/usr/bin/env bash
# Measures distributed mode in one run: one floodwall without Redis, then
# three replicas sharing a global limit through Redis in lease mode, then in
# strict mode, all in front of the same instant backend.
#
#   bench/distributed.sh [extra flags for `floodwall-bench distributed`]
#
# Installs redis-server (with redis-cli) if missing, builds floodwall and
# floodwall-bench in release, and runs `floodwall-bench distributed`, which
# starts its own redis-server on a free port, the replicas (real `floodwall
# serve` processes) on free ports, and stops them all. Results land in bench/results/distributed.{md,json}.
#
# Environment: OUT (results dir), FLOODWALL (path to the gateway binary the
# replicas run) and FLOODWALL_BENCH (path to floodwall-bench); both built in
# release if unset.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null
if [ -z "${FLOODWALL:-}" ] || [ -z "${FLOODWALL_BENCH:-}" ]; then
  cargo build --release -p floodwall -p floodwall-bench --locked
fi
FLOODWALL=${FLOODWALL:-target/release/floodwall}
FLOODWALL_BENCH=${FLOODWALL_BENCH:-target/release/floodwall-bench}
"$FLOODWALL_BENCH" distributed --floodwall "$FLOODWALL" --out "${OUT:-bench/results}" "$@"
