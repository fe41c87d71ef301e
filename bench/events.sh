#!/usr/bin/env bash
# What the decision log ([events]) costs on the request path: the same
# floodwall build with the log off, to a file at sample 1.0, and to a file
# at sample 0.1, each behind `wrk -t2 -c64 -dDURATION` against an nginx
# backend that answers at once; rounds rotate the order; medians of req/s.
#
#   bench/events.sh                  (ROUNDS=3 DURATION=8)
#
# Every request is admitted (fixed limit 1000), so each is one `success`
# event. Prints a Markdown table; the figures are ratios within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
cargo build --release -q -p floodwall
FLOODWALL=target/release/floodwall
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "needs wrk and nginx (bench/overhead.sh installs them)" >&2; exit 1; }
source bench/lib.sh
dir=$(mktemp -d /tmp/floodwall-events.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
BACKEND=$(free_port)
mkdir -p "$dir/backend/logs"
cat > "$dir/backend/nginx.conf" <<CFG
worker_processes 1;
pid $dir/backend/nginx.pid;
error_log $dir/backend/logs/error.log warn;
events { worker_connections 8000; }
http { access_log off; server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } } }
CFG
nginx -p "$dir/backend" -c "$dir/backend/nginx.conf" -g 'daemon off;' >"$dir/backend.log" 2>&1 &
pids+=($!)
sleep 0.5
declare -A RESULTS
run() { # name extra-config
  local name=$1 extra=$2 port admin cfg pid
  port=$(free_port); admin=$(free_port); cfg="$dir/$name.toml"
  printf '[server]\nlisten = "127.0.0.1:%s"\nadmin = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n%b\n[[upstreams]]\nname = "app"\nurl = "http://127.0.0.1:%s"\n[[routes]]\nname = "all"\nupstream = "app"\nlimit = { algorithm = "fixed", value = 1000 }\n' \
    "$port" "$admin" "$extra" "$BACKEND" > "$cfg"
  "$FLOODWALL" serve --config "$cfg" >"$dir/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
  local rps
  rps=$(wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
  RESULTS[$name]="${RESULTS[$name]:-} $rps"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$dir/events.jsonl"
}
for r in $(seq "$ROUNDS"); do
  order=(off file sampled)
  for k in $(seq 0 $(( (r - 1) % 3 ))); do order=("${order[@]:1}" "${order[0]}"); done
  for g in "${order[@]}"; do
    case $g in
      off) run off "" ;;
      file) run file "[events]\npath = \"$dir/events.jsonl\"" ;;
      sampled) run sampled "[events]\npath = \"$dir/events.jsonl\"\nsample = 0.1" ;;
    esac
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off=$(echo "${RESULTS[off]}" | median)
echo "| events | req/s (median of $ROUNDS) | vs off | rounds |"
echo "|---|---:|---:|---|"
for g in off file sampled; do
  m=$(echo "${RESULTS[$g]}" | median)
  echo "| $g | $m | $(python3 -c "print(f'{$m/$off:.2f}x')") |${RESULTS[$g]} |"
done
