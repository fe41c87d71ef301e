#!/usr/bin/env bash
# A 3x spike over four endpoints, one of them 5x slower, through floodwall
# (balance = least_inflight: power of two choices on in flight), nginx
# (least_conn, max_conns per server) and HAProxy (balance leastconn,
# maxconn per server), each a process of its own in front of the same four
# backend processes, in one run, rounds interleaved.
#
#   bench/endpoints.sh          (ROUNDS=2, OUT=bench/results)
#
# The backends are crates/floodwall/tests/endpoints/upstream.py with a
# worker cap: three of 4 workers × 50 ms (80 req/s each) and one of 4 ×
# 250 ms (16 req/s): C = 256 req/s. The load is `floodwall-bench load`,
# open loop, three phases back to back: 0.5 C for 5 s, 3 C for 15 s,
# 0.5 C for 5 s. W = 20 (the 16 workers plus hand-off slack); the peers
# get W / 4 = 5 per server. Every gate is started fresh for each round.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"

source bench/lib.sh
need_commands haproxy nginx
HAPROXY=$(sbin haproxy)
NGINX=$(sbin nginx)
if [ -z "${FLOODWALL:-}" ] || [ -z "${FLOODWALL_BENCH:-}" ]; then
  cargo build --release -q -p floodwall -p floodwall-bench
fi
FLOODWALL=${FLOODWALL:-target/release/floodwall}
FLOODWALL_BENCH=${FLOODWALL_BENCH:-target/release/floodwall-bench}

dir=$(mktemp -d /tmp/floodwall-endpoints.XXXXXX)
backends=()
gate_pid=""
cleanup() {
  [ -n "$gate_pid" ] && kill "$gate_pid" 2>/dev/null || true
  for p in "${backends[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# The four backends: upstream.py PORT DELAY_MS HOST WORKERS.
ports=()
i=0
for ms in 50 50 50 250; do
  python3 crates/floodwall/tests/endpoints/upstream.py 0 "$ms" 127.0.0.1 4 >"$dir/backend$i.out" 2>&1 &
  backends+=($!)
  for _ in $(seq 50); do
    grep -q '^listening' "$dir/backend$i.out" && break
    sleep 0.1
  done
  ports+=("$(awk '/^listening/ {print $2}' "$dir/backend$i.out")")
  i=$((i + 1))
done
echo "backends: ${ports[*]} (the last one is the slow one)"

W=20
PER=$((W / 4))
C=256
start_gate() { # name port
  local g=$1 port=$2 list="" servers="" hservers="" i=0
  for p in "${ports[@]}"; do
    list+="\"http://127.0.0.1:$p\", "
    servers+="    server 127.0.0.1:$p max_conns=$PER;"$'\n'
    hservers+="  server s$i 127.0.0.1:$p maxconn $PER"$'\n'
    i=$((i + 1))
  done
  case $g in
    floodwall-default|floodwall-fixed-$W)
      local limit=""
      [ "$g" = "floodwall-fixed-$W" ] && limit="limit = { algorithm = \"fixed\", value = $W }"
      cat > "$dir/$g.toml" <<CFG
[server]
listen = "127.0.0.1:$port"
admin = "127.0.0.1:0"

[[upstreams]]
name = "svc"
endpoints = [${list%, }]

[[routes]]
name = "all"
path_prefix = "/"
upstream = "svc"
$limit
CFG
      "$FLOODWALL" serve --config "$dir/$g.toml" >"$dir/$g.log" 2>&1 &
      ;;
    nginx-least_conn)
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
    least_conn;
$servers    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
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
      "$NGINX" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;' >"$dir/$g.log" 2>&1 &
      ;;
    haproxy-leastconn)
      cat > "$dir/haproxy.cfg" <<CFG
global
  maxconn 8000
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
  balance leastconn
  http-reuse always
$hservers
CFG
      "$HAPROXY" -f "$dir/haproxy.cfg" -db >"$dir/$g.log" 2>&1 &
      ;;
  esac
  gate_pid=$!
  for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  echo "$g did not start:"; cat "$dir/$g.log"; exit 1
}
stop_gate() { kill "$gate_pid" 2>/dev/null || true; wait "$gate_pid" 2>/dev/null || true; gate_pid=""; }

gates=(floodwall-default "floodwall-fixed-$W" nginx-least_conn haproxy-leastconn)
json="$dir/rows.jsonl"
: > "$json"
for r in $(seq 0 $((ROUNDS - 1))); do
  order=("${gates[@]:$((r % ${#gates[@]}))}" "${gates[@]:0:$((r % ${#gates[@]}))}")
  for g in "${order[@]}"; do
    port=$(free_port)
    start_gate "$g" "$port"
    url="http://127.0.0.1:$port/"
    q=$("$FLOODWALL_BENCH" load "$url" --rate $((C / 2)) --warmup 0s --duration 5s)
    s=$("$FLOODWALL_BENCH" load "$url" --rate $((3 * C)) --warmup 0s --duration 15s)
    a=$("$FLOODWALL_BENCH" load "$url" --rate $((C / 2)) --warmup 0s --duration 5s)
    echo "  round $r $g: spike $s; after $a"
    echo "{\"gate\":\"$g\",\"round\":$r,\"quiet\":$q,\"spike\":$s,\"after\":$a}" >> "$json"
    stop_gate
    sleep 2
  done
done

python3 - "$json" "$OUT" "$C" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, c = sys.argv[2], float(sys.argv[3])
gates = []
for r in rows:
    if r["gate"] not in gates:
        gates.append(r["gate"])
def ok_rps(phase, secs):
    return phase["sent"] * (1 - phase["percent_failed"] / 100) / secs
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
lines = [
    "### endpoints: a 3x spike over four endpoints, one 5x slower (C = 256 req/s)",
    "",
    "| gate | goodput in the spike | of C | p50 / p99 in the spike | failed in the spike | served after (0.5 C) |",
    "|---|---:|---:|---:|---:|---:|",
]
summary = {}
for g in gates:
    rs = [r for r in rows if r["gate"] == g]
    good = med([ok_rps(r["spike"], 15) for r in rs])
    after = med([100 - r["after"]["percent_failed"] for r in rs])
    p50 = med([r["spike"]["p50_ms"] for r in rs])
    p99 = med([r["spike"]["p99_ms"] for r in rs])
    failed = med([r["spike"]["percent_failed"] for r in rs])
    summary[g] = {"goodput_rps": good, "p50_ms": p50, "p99_ms": p99, "failed_percent": failed, "after_served_percent": after}
    lines.append(
        f"| {g} | {good:.0f} req/s | {100 * good / c:.0f}% | {p50:.1f} / {p99:.1f} ms | {failed:.1f}% | {after:.1f}% |"
    )
lines += [
    "",
    f"Median of {len(rows) // len(gates)} interleaved rounds, each gate started fresh; goodput = 2xx answers per second over the 15 s spike (the client gives up at 2 s); p50 / p99 of the 2xx answers, from scheduled arrival. Three backends of 4 workers × 50 ms and one of 4 × 250 ms (crates/floodwall/tests/endpoints/upstream.py), every gate a process of its own, everything on this machine's cores.",
]
open(f"{out}/endpoints.md", "w").write("\n".join(lines) + "\n")
json.dump({"rows": rows, "summary": summary}, open(f"{out}/endpoints.json", "w"), indent=1)
print("\n".join(lines))
PY
