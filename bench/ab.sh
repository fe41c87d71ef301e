#!/usr/bin/env bash
# Two floodwall binaries against each other, alternated in one run, beside
# nginx: what a change to the request path did.
#
#   bench/ab.sh BEFORE AFTER      (ROUNDS=3 DURATION=8 STARTS=5)
#
# e.g. BEFORE from a worktree of the previous commit:
#   git worktree add /tmp/before HEAD~1
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p floodwall)
#   cargo build --release -p floodwall -p floodwall-bench
#   bench/ab.sh /tmp/before-target/release/floodwall target/release/floodwall
#
# - closed loop: `wrk -t2 -c64 -dDURATION` through nginx (`keepalive 256`),
#   BEFORE and AFTER, ROUNDS rounds; req/s and each gate's CPU time per
#   request (user + system, from /proc);
# - cold start: STARTS times each, alternating with a fresh nginx gateway,
#   the gate started fresh and
#   loaded at once at 10,000 req/s for 5 s (`floodwall-bench load
#   --warmup 0s`): p99 and failed of the first 3 s, and the upstream
#   connections open at the end.
# Every gate has a limit of 1,000 that never binds; the backend is a second
# nginx with one worker, `return 200`. Installs nginx and wrk if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?usage: bench/ab.sh BEFORE AFTER}
AFTER=${2:?usage: bench/ab.sh BEFORE AFTER}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
STARTS=${STARTS:-5}
FLOODWALL_BENCH=${FLOODWALL_BENCH:-target/release/floodwall-bench}
[ -x "$FLOODWALL_BENCH" ] || cargo build --release -q -p floodwall-bench

source bench/lib.sh
need_commands nginx wrk
NGINX=$(sbin nginx)
dir=$(mktemp -d /tmp/floodwall-ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

BACKEND=$(free_port); PROXY=$(free_port)
mkdir -p "$dir/b/logs" "$dir/p/logs"
cat > "$dir/b/nginx.conf" <<CFG
worker_processes 1; pid $dir/b/nginx.pid; error_log $dir/b/logs/error.log warn;
events { worker_connections 8000; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } } }
CFG
cat > "$dir/p/nginx.conf" <<CFG
worker_processes auto; pid $dir/p/nginx.pid; error_log $dir/p/logs/error.log warn;
events { worker_connections 8000; }
http { access_log off; upstream b { server 127.0.0.1:$BACKEND; keepalive 256; }
  server { listen 127.0.0.1:$PROXY;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CFG
"$NGINX" -p "$dir/b" -c "$dir/b/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & pids+=($!)
"$NGINX" -p "$dir/p" -c "$dir/p/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 & NGINX_PID=$!; pids+=($!)

start() { # binary port -> pid
  "$1" serve --listen "127.0.0.1:$2" --admin 127.0.0.1:0 \
    --upstream "http://127.0.0.1:$BACKEND" --limit 1000 >/dev/null 2>&1 &
  local p=$! i
  for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break; sleep 0.05; done
  echo $p
}
ticks() {
  local s=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    [ -r /proc/$p/stat ] && s=$((s + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $s
}
HZ=$(getconf CLK_TCK)

declare -A PORT PID
PORT[before]=$(free_port); PORT[after]=$(free_port); PORT[nginx]=$PROXY
PID[before]=$(start "$BEFORE" "${PORT[before]}"); pids+=("${PID[before]}")
PID[after]=$(start "$AFTER" "${PORT[after]}"); pids+=("${PID[after]}")
PID[nginx]=$NGINX_PID
sleep 1

echo "== closed loop: wrk -t2 -c64 -d${DURATION}s, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  for g in nginx before after; do
    c0=$(ticks "${PID[$g]}")
    out=$(wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:${PORT[$g]}/")
    c1=$(ticks "${PID[$g]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    echo "  round $r $g: $rps req/s, $(python3 -c "print(round(($c1 - $c0) * 1e6 / $HZ / $n, 1))") us CPU/request"
  done
done
kill "${PID[before]}" "${PID[after]}" 2>/dev/null || true

# A fresh nginx gateway for each of its cold starts: the proxy's config on
# another port, its own pid file.
start_nginx() { # port -> pid
  sed -e "s/listen 127.0.0.1:$PROXY;/listen 127.0.0.1:$1;/" -e "s#pid [^;]*;#pid $dir/p/cold.pid;#" \
    "$dir/p/nginx.conf" > "$dir/p/cold.conf"
  "$NGINX" -p "$dir/p" -c "$dir/p/cold.conf" -g 'daemon off;' >/dev/null 2>&1 &
  local p=$! i
  for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break; sleep 0.05; done
  echo $p
}

echo "== cold start at 10000 req/s, $STARTS starts each"
for r in $(seq 1 "$STARTS"); do
  for g in nginx before after; do
    bin=$BEFORE; [ "$g" = after ] && bin=$AFTER
    port=$(free_port)
    if [ "$g" = nginx ]; then p=$(start_nginx "$port"); else p=$(start "$bin" "$port"); fi
    line=$("$FLOODWALL_BENCH" load "http://127.0.0.1:$port/" --rate 10000 --warmup 0s --duration 5s)
    open=$(ss -tan state established "( dport = :$BACKEND )" | tail -n +2 | wc -l)
    kill "$p"; wait "$p" 2>/dev/null || true
    # Connections the gateway had open wait to close before the next start.
    sleep 0.5
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("  start %s %s: first 3 s p99 %.1f ms, failed %.2f%%, upstream connections open %s" % (sys.argv[2], sys.argv[3], d["first_3s_p99_ms"], d["first_3s_percent_failed"], sys.argv[4]))' "$line" "$r" "$g" "$open"
  done
done
