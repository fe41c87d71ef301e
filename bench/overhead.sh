#!/usr/bin/env bash
# What one hop costs: floodwall beside nginx and HAProxy, each a real
# process in front of the same backend that answers at once, in one run.
#
#   bench/overhead.sh            (ROUNDS=3 DURATION=10 by default)
#
# - closed loop: `wrk -t2 -c64 -dDURATION` per gate, rounds rotating the
#   order; req/s and the gate's CPU time per request (user + system of its
#   processes, from /proc), medians over the rounds;
# - open loop at 5,000 and 10,000 req/s (`floodwall-bench load`, its own
#   process, 2 s warm-up not counted): p50 / p99 / p99.9 of 2xx;
# - cold start: each gate restarted, then loaded at 10,000 req/s at once,
#   the first 3 s counted: the connection storm of a fresh process.
#
# Every gate has a limit far above the load (floodwall --limit 1000, nginx
# limit_conn 1000, HAProxy maxconn 1000): this measures the hop, not a
# refusal. The backend is a second nginx with one worker, `return 200`.
# Everything shares this machine's cores, so figures are ratios within the
# run. Installs nginx, haproxy and wrk with apt-get if missing; writes
# bench/results/overhead-peers.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATES=${RATES:-"5000 10000"}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"

source bench/lib.sh
need_commands haproxy nginx wrk
HAPROXY=$(sbin haproxy)
NGINX=$(sbin nginx)
if [ -z "${FLOODWALL:-}" ] || [ -z "${FLOODWALL_BENCH:-}" ]; then
  cargo build --release -q -p floodwall -p floodwall-bench
fi
FLOODWALL=${FLOODWALL:-target/release/floodwall}
FLOODWALL_BENCH=${FLOODWALL_BENCH:-target/release/floodwall-bench}
CORES=$(nproc)

dir=$(mktemp -d /tmp/floodwall-overhead.XXXXXX)
declare -A PID PORT
cleanup() {
  for g in "${!PID[@]}"; do kill "${PID[$g]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

BACKEND=$(free_port)
mkdir -p "$dir/backend/logs" "$dir/nginx/logs"
cat > "$dir/backend/nginx.conf" <<CFG
worker_processes 1;
pid $dir/backend/nginx.pid;
error_log $dir/backend/logs/error.log warn;
events { worker_connections 8000; }
http {
  access_log off;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } }
}
CFG
"$NGINX" -p "$dir/backend" -c "$dir/backend/nginx.conf" -g 'daemon off;' >"$dir/backend.log" 2>&1 &
PID[direct]=$!; PORT[direct]=$BACKEND

start_gate() { # name
  local g=$1 port
  port=${PORT[$g]:-$(free_port)}
  PORT[$g]=$port
  case $g in
    floodwall)
      "$FLOODWALL" serve --listen "127.0.0.1:$port" --admin 127.0.0.1:0 \
        --upstream "http://127.0.0.1:$BACKEND" --limit 1000 >"$dir/floodwall.log" 2>&1 &
      ;;
    nginx)
      cat > "$dir/nginx/nginx.conf" <<CFG
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log warn;
events { worker_connections 8000; }
http {
  access_log off;
  limit_conn_zone \$server_name zone=perserver:1m;
  upstream be { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    server_name bench;
    limit_conn perserver 1000;
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
      ;;
    haproxy)
      cat > "$dir/haproxy.cfg" <<CFG
global
  maxconn 8000
  nbthread $CORES
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout queue 100ms
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$BACKEND maxconn 1000
CFG
      "$HAPROXY" -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
      ;;
  esac
  PID[$g]=$!
  for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  echo "$g did not start:"; cat "$dir/$g.log"; exit 1
}
stop_gate() { kill "${PID[$1]}" 2>/dev/null || true; wait "${PID[$1]}" 2>/dev/null || true; }

# The CPU ticks of a process and its children (nginx's workers).
ticks() {
  local s=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    [ -r /proc/$p/stat ] || continue
    s=$((s + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $s
}
HZ=$(getconf CLK_TCK)

gates=(floodwall nginx haproxy)
for g in "${gates[@]}"; do start_gate "$g"; done
all=(direct "${gates[@]}")

json="$dir/rows.jsonl"
: > "$json"
echo "== closed loop: wrk -t2 -c64 -d${DURATION}s, $ROUNDS rounds"
for r in $(seq 0 $((ROUNDS - 1))); do
  order=("${all[@]:$((r % ${#all[@]}))}" "${all[@]:0:$((r % ${#all[@]}))}")
  for g in "${order[@]}"; do
    c0=$(ticks "${PID[$g]}")
    out=$(wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:${PORT[$g]}/")
    c1=$(ticks "${PID[$g]}")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out"); non2xx=${non2xx:-0}
    cpu=$(python3 -c "print(round(($c1-$c0)/$HZ*1e6/max($n,1),2))")
    echo "  round $r $g: $rps req/s, $cpu us CPU/request, non-2xx $non2xx"
    echo "{\"kind\":\"closed\",\"gate\":\"$g\",\"round\":$r,\"rps\":$rps,\"cpu_us\":$cpu,\"non2xx\":$non2xx}" >> "$json"
  done
done

echo "== open loop"
for rate in $RATES; do
  for r in $(seq 0 $((ROUNDS - 1))); do
    order=("${all[@]:$((r % ${#all[@]}))}" "${all[@]:0:$((r % ${#all[@]}))}")
    for g in "${order[@]}"; do
      line=$("$FLOODWALL_BENCH" load "http://127.0.0.1:${PORT[$g]}/" --rate "$rate" --warmup 2s --duration "${DURATION}s")
      echo "  $rate req/s round $r $g: $line"
      echo "{\"kind\":\"open\",\"gate\":\"$g\",\"round\":$r,\"result\":$line}" >> "$json"
    done
  done
done

echo "== cold start at 10000 req/s"
for r in $(seq 0 $((ROUNDS - 1))); do
  for g in "${gates[@]}"; do
    stop_gate "$g"; start_gate "$g"
    line=$("$FLOODWALL_BENCH" load "http://127.0.0.1:${PORT[$g]}/" --rate 10000 --warmup 0s --duration 5s)
    echo "  round $r $g: $line"
    echo "{\"kind\":\"cold\",\"gate\":\"$g\",\"round\":$r,\"result\":$line}" >> "$json"
  done
done

python3 - "$json" "$OUT" "$RATES" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, rates = sys.argv[2], [float(r) for r in sys.argv[3].split()]
gates = ["direct", "floodwall", "nginx", "haproxy"]
med = lambda xs: statistics.median(xs) if xs else float("nan")
def get(kind, g, key, rate=None):
    xs = []
    for r in rows:
        if r["kind"] != kind or r["gate"] != g:
            continue
        v = r if kind == "closed" else r["result"]
        if rate is not None and v.get("rate") != rate:
            continue
        if v.get(key) is not None:
            xs.append(v[key])
    return med(xs)
md = ["| gate | closed loop req/s (median) | vs nginx | CPU µs/request | vs nginx |"
      + "".join(f" p50 / p99 at {int(r)} req/s |" for r in rates)
      + " cold start, first 3 s: p99 / failed |",
      "|---|---:|---:|---:|---:|" + "---:|" * len(rates) + "---:|"]
nrps, ncpu = get("closed", "nginx", "rps"), get("closed", "nginx", "cpu_us")
for g in gates:
    rps, cpu = get("closed", g, "rps"), get("closed", g, "cpu_us")
    cells = [g, f"{rps:.0f}", f"{rps / nrps:.2f}x",
             f"{cpu:.1f}" if g != "direct" else "(backend)",
             f"{cpu / ncpu:.2f}x" if g != "direct" else ""]
    for r in rates:
        cells.append(f"{get('open', g, 'p50_ms', r):.2f} / {get('open', g, 'p99_ms', r):.2f} ms")
    if g == "direct":
        cells.append("")
    else:
        cells.append(f"{get('cold', g, 'first_3s_p99_ms'):.1f} ms / {get('cold', g, 'first_3s_percent_failed'):.2f}%")
    md.append("| " + " | ".join(cells) + " |")
text = "\n".join(md) + "\n"
print(text)
open(f"{out}/overhead-peers.md", "w").write(text)
json.dump(rows, open(f"{out}/overhead-peers.json", "w"), indent=1)
PY
