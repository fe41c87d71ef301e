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
# Environment: SCALE (multiplies every duration, default 1), W (the best
# static limit, default 10: 8 workers plus the
# slack that covers hand-off time, see BENCHMARKS.md), OUT (results dir),
# FLOODWALL_BENCH (path to the floodwall-bench binary; built in release if
# unset).
set -euo pipefail
cd "$(dirname "$0")/.."

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(spike workers-drop priority)
W=${W:-10}
OUT=${OUT:-bench/results}

need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ -z "${FLOODWALL_BENCH:-}" ]; then
  cargo build --release -q -p floodwall-bench
  FLOODWALL_BENCH=target/release/floodwall-bench
fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

dir=$(mktemp -d /tmp/floodwall-peers.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

BACKEND=$(free_port)
gates=()

# HAProxy: `server maxconn N` with a short queue timeout, at W, 2W and W/2,
# and at W with a long queue timeout (a standing queue).
haproxy_at() { # name maxconn queue_timeout
  local name=$1 maxconn=$2 tq=$3 port
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
  server s1 127.0.0.1:$BACKEND maxconn $maxconn
CFG
  "$HAPROXY" -f "$dir/$name.cfg" -db >"$dir/$name.log" 2>&1 &
  pids+=($!)
  gates+=(--gate "$name=http://127.0.0.1:$port@$maxconn")
}
haproxy_at "haproxy-maxconn-$W" "$W" 100ms
haproxy_at "haproxy-maxconn-$((2 * W))" "$((2 * W))" 100ms
haproxy_at "haproxy-maxconn-$((W / 2))" "$((W / 2))" 100ms
haproxy_at "haproxy-maxconn-$W-queue-5s" "$W" 5s

# nginx: limit_conn on $server_name at W, 503 when over, keepalive upstream.
NPORT=$(free_port)
mkdir -p "$dir/nginx/logs"
cat > "$dir/nginx/nginx.conf" <<CFG
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log warn;
events { worker_connections 8000; }
http {
  access_log off;
  client_body_temp_path $dir/nginx/tmp_body;
  proxy_temp_path $dir/nginx/tmp_proxy;
  fastcgi_temp_path $dir/nginx/tmp_fcgi;
  uwsgi_temp_path $dir/nginx/tmp_uwsgi;
  scgi_temp_path $dir/nginx/tmp_scgi;
  limit_conn_zone \$server_name zone=perserver:1m;
  upstream be {
    server 127.0.0.1:$BACKEND;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NPORT;
    server_name bench;
    limit_conn perserver $W;
    limit_conn_status 503;
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CFG
"$NGINX" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' >"$dir/nginx.log" 2>&1 &
pids+=($!)
gates+=(--gate "nginx-limit_conn-$W=http://127.0.0.1:$NPORT@$W")

sleep 1
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a peer failed to start:"; cat "$dir"/*.log "$dir"/nginx/logs/error.log 2>/dev/null; exit 1; }
done

for s in "${scenarios[@]}"; do
  "$FLOODWALL_BENCH" run "$s" --backend-addr "127.0.0.1:$BACKEND" --limit "$W" --scale "${SCALE:-1}" "${gates[@]}" --out "$OUT"
done
