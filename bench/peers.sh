#!/usr/bin/env bash
# Runs floodwall-bench scenarios with HAProxy and nginx side by side with
# floodwall, against the same simulated backend, in one run.
#
#   bench/peers.sh [SCENARIO ...]      (default: spike workers-drop priority)
#
# Installs haproxy and nginx with apt-get if missing, writes their configs
# into a temp dir, starts them on free loopback ports in front of the
# backend's (pre-chosen, free) port, runs `floodwall-bench run` with them as
# extra targets, and stops them by PID. Results land in bench/results/.
#
# `fast-upstream` loads a second backend, one that answers at once, on a
# port of its own: it gets its own HAProxy and nginx in front of that one,
# with limits that never bind (FAST_W), like its fixed-limit floodwall.
# `cold-start` needs nothing special: the peers are static, and every
# floodwall the bench starts is started fresh at the first arrival.
#
# Environment: SCALE (multiplies every duration, default 1), W (the best
# static limit, default 10: 8 workers plus the
# slack that covers hand-off time, see BENCHMARKS.md), FAST_W (the peers'
# and floodwall's fixed limit for fast-upstream, default 1000), OUT (results
# dir), FLOODWALL_BENCH (path to the floodwall-bench binary; built in
# release if unset), BENCH_ARGS (extra `floodwall-bench run` flags, split
# on spaces, e.g. "--retry-budget --no-direct").
set -euo pipefail
cd "$(dirname "$0")/.."

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(spike workers-drop priority)
W=${W:-10}
FAST_W=${FAST_W:-1000}
OUT=${OUT:-bench/results}
want_slow=0; want_fast=0
for s in "${scenarios[@]}"; do
  case $s in
    fast-upstream) want_fast=1 ;;
    *) want_slow=1 ;;
  esac
done

source bench/lib.sh
need_commands haproxy nginx
HAPROXY=$(sbin haproxy)
NGINX=$(sbin nginx)

if [ -z "${FLOODWALL_BENCH:-}" ]; then
  cargo build --release -q -p floodwall-bench
  FLOODWALL_BENCH=target/release/floodwall-bench
fi


dir=$(mktemp -d /tmp/floodwall-peers.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

BACKEND=$(free_port)   # the simulated database
TRIVIAL=$(free_port)   # fast-upstream's backend that answers at once
gates=()               # --gate flags for peers in front of BACKEND
fast_gates=()          # --gate flags for peers in front of TRIVIAL

# HAProxy: `server maxconn N` with a queue timeout.
haproxy_at() { # gates-array name backend-port maxconn queue_timeout
  local -n into=$1
  local name=$2 backend=$3 maxconn=$4 tq=$5 port
  port=$(free_port)
  cat > "$dir/$name.cfg" <<CFG
global
  maxconn 8000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout queue $tq
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$backend maxconn $maxconn
CFG
  "$HAPROXY" -f "$dir/$name.cfg" -db >"$dir/$name.log" 2>&1 &
  pids+=($!)
  into+=(--gate "$name=http://127.0.0.1:$port@$maxconn")
}

# nginx: limit_conn on $server_name at N, 503 when over, keepalive upstream.
nginx_at() { # gates-array name backend-port limit
  local -n into=$1
  local name=$2 backend=$3 limit=$4 port
  local d="$dir/$name"
  port=$(free_port)
  mkdir -p "$d/logs"
  cat > "$d/nginx.conf" <<CFG
worker_processes auto;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 8000; }
http {
  access_log off;
  client_body_temp_path $d/tmp_body;
  proxy_temp_path $d/tmp_proxy;
  fastcgi_temp_path $d/tmp_fcgi;
  uwsgi_temp_path $d/tmp_uwsgi;
  scgi_temp_path $d/tmp_scgi;
  limit_conn_zone \$server_name zone=perserver:1m;
  upstream be {
    server 127.0.0.1:$backend;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
    server_name bench;
    limit_conn perserver $limit;
    limit_conn_status 503;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CFG
  "$NGINX" -p "$d" -c "$d/nginx.conf" -g 'daemon off;' >"$dir/$name.log" 2>&1 &
  pids+=($!)
  into+=(--gate "$name=http://127.0.0.1:$port@$limit")
}

if [ $want_slow -eq 1 ]; then
  # At W, 2W and W/2 with a short queue timeout, and at W with a long one
  # (a standing queue); nginx at W.
  haproxy_at gates "haproxy-maxconn-$W" "$BACKEND" "$W" 100ms
  haproxy_at gates "haproxy-maxconn-$((2 * W))" "$BACKEND" "$((2 * W))" 100ms
  haproxy_at gates "haproxy-maxconn-$((W / 2))" "$BACKEND" "$((W / 2))" 100ms
  haproxy_at gates "haproxy-maxconn-$W-queue-5s" "$BACKEND" "$W" 5s
  nginx_at gates "nginx-limit_conn-$W" "$BACKEND" "$W"
fi
if [ $want_fast -eq 1 ]; then
  haproxy_at fast_gates "haproxy-maxconn-$FAST_W" "$TRIVIAL" "$FAST_W" 100ms
  nginx_at fast_gates "nginx-limit_conn-$FAST_W" "$TRIVIAL" "$FAST_W"
fi

sleep 1
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a peer failed to start:"; cat "$dir"/*.log "$dir"/*/logs/error.log 2>/dev/null; exit 1; }
done

for s in "${scenarios[@]}"; do
  case $s in
    fast-upstream)
      "$FLOODWALL_BENCH" run "$s" --backend-addr "127.0.0.1:$TRIVIAL" --limit "$FAST_W" --scale "${SCALE:-1}" "${fast_gates[@]}" ${BENCH_ARGS:-} --out "$OUT" ;;
    *)
      "$FLOODWALL_BENCH" run "$s" --backend-addr "127.0.0.1:$BACKEND" --limit "$W" --scale "${SCALE:-1}" "${gates[@]}" ${BENCH_ARGS:-} --out "$OUT" ;;
  esac
done
