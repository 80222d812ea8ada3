#!/usr/bin/env bash
# Peer harness (run by hand, not in CI): cutover against HAProxy, nginx and
# Caddy in the same run, on the same machine, each with one worker thread,
# keep-alive to the same tiny backend, logging off; the backend alone is
# the ceiling. Load is wrk at several connection counts, in alternating
# turns (A B C D … A B C D …) so drift hits every peer alike.
#
#   benches/peers.sh                 # defaults below
#   ROUNDS=5 DURATION=10s CONNS="16 64 256" benches/peers.sh
#
# Variants: VARIANT=keepalive (default), close (a new connection per
# request), body64k (a 64 KiB response). `cutover+log` is cutover with its
# access log written to a file, to measure the access log's cost;
# `pingora` (with BASELINE=1) is a minimal pingora proxy with the same
# settings (examples/pingora_baseline.rs): the floor under cutover.
# `before` (with BEFORE=/path/to/an/older/cutover) is another build of
# cutover, same settings, its own identical backend: a before/after run.
# `TUNING` / `BEFORE_TUNING` set `proxy.tuning` (flow YAML, e.g.
# '{ l4_read_buffer: 65536 }') for cutover / before: with BEFORE set to the
# same binary, an A/B of a setting in the same run. `SKIP` names peers
# left out of the rounds (e.g. SKIP="caddy nginx cutover+log").
# Output: a table of medians over rounds (req/s, p50, p99, errors, ratio to
# cutover); raw wrk output goes to benches/results/peers-<variant>/.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-"16 64 256"}
VARIANT=${VARIANT:-keepalive}
THREADS=${THREADS:-1} # cutover's worker threads (the peers keep one)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/cutover-peers.XXXXXX)
chmod 755 "$WORK" # nginx workers (nobody) read the 64 KiB file from here
OUT="$ROOT/benches/results/peers-$VARIANT$([ "${THREADS:-1}" = 1 ] || echo "-t${THREADS}")"
mkdir -p "$OUT"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

need=()
for tool in wrk haproxy nginx caddy; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: wrk haproxy nginx-light caddy"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk haproxy nginx-light caddy
fi
(cd "$ROOT" && cargo build --release --bins -q)
[ -n "${BASELINE:-}" ] && (cd "$ROOT" && cargo build --release --example pingora_baseline -q)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the backend: nginx returning a tiny body (or a 64 KiB file), started
# --- by cutover itself as its app, so every proxy shares that one process.
head -c 65536 /dev/zero | tr '\0' 'x' > "$WORK/64k"
cat > "$WORK/backend.sh" <<EOF
#!/bin/sh
sed "s/@PORT@/\$PORT/" "$WORK/backend.tmpl" > "$WORK/backend-\$PORT.conf"
exec nginx -p "$WORK" -c "$WORK/backend-\$PORT.conf" -g "daemon off; pid $WORK/backend-\$PORT.pid;"
EOF
chmod +x "$WORK/backend.sh"
cat > "$WORK/backend.tmpl" <<EOF
worker_processes 1;
error_log /dev/null crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:@PORT@ backlog=4096;
    location = /health { return 200 "ok\n"; }
    location = /64k { alias $WORK/64k; }
    location / { return 200 "hello from the backend\n"; }
  }
}
EOF

start_cutover() { # name port admin accesslog [binary] [proxy.tuning]
  cat > "$WORK/$1.yaml" <<EOF
proxy: { listen: ["127.0.0.1:$2"], threads: $THREADS${6:+, tuning: $6} }
admin: { listen: "127.0.0.1:$3" }
state_dir: $WORK/state-$1
apps:
  backend:
    command: ["$WORK/backend.sh"]
    health: { path: /health, interval: 200ms, timeout: 1s, start_timeout: 10s }
routes:
  - { host: "*", path: /, app: backend }
EOF
  "${5:-$ROOT/target/release/cutover}" up -c "$WORK/$1.yaml" --access-log "$4" > "$WORK/$1.log" 2>&1 &
  pids+=($!)
}
start_cutover cutover 18081 18181 off "" "${TUNING:-}"
start_cutover cutover-log 18085 18185 "$WORK/access.log"
for i in $(seq 100); do
  curl -fs http://127.0.0.1:18081/ >/dev/null && curl -fs http://127.0.0.1:18085/ >/dev/null && break
  sleep 0.1
done
BACKEND=$(curl -fs http://127.0.0.1:18181/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["apps"][0]["instances"][0]["address"])')
echo "backend (started by cutover): $BACKEND"

# --- the peers, one worker each, keep-alive to the backend, logs off.
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:18082
  default_backend b
backend b
  server s1 $BACKEND
EOF
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
pids+=($!)

cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
error_log /dev/null crit;
pid $WORK/nginx-peer.pid;
events { worker_connections 8000; }
http {
  access_log off;
  upstream b { server $BACKEND; keepalive 256; }
  server {
    listen 127.0.0.1:18083 backlog=4096;
    location / {
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
nginx -p "$WORK" -c "$WORK/nginx.conf" -g "daemon off;" &
pids+=($!)

cat > "$WORK/Caddyfile" <<EOF
{
  admin off
  auto_https off
  log {
    output discard
  }
}
http://127.0.0.1:18084 {
  reverse_proxy $BACKEND
}
EOF
GOMAXPROCS=1 caddy run --config "$WORK/Caddyfile" --adapter caddyfile > "$WORK/caddy.log" 2>&1 &
pids+=($!)
sleep 1

declare -A PORTS=([direct]="${BACKEND##*:}" [cutover]=18081 [cutover+log]=18085 [haproxy]=18082 [nginx]=18083 [caddy]=18084 [pingora]=18086 [before]=18087)
ORDER=(direct cutover cutover+log haproxy nginx caddy)
if [ -n "${BEFORE:-}" ]; then
  start_cutover before 18087 18187 off "$BEFORE" "${BEFORE_TUNING:-}"
  ORDER+=(before)
fi
if [ -n "${BASELINE:-}" ]; then
  "$ROOT/target/release/examples/pingora_baseline" 127.0.0.1:18086 "$BACKEND" > "$WORK/pingora.log" 2>&1 &
  pids+=($!)
  ORDER+=(pingora)
fi
# SKIP="caddy nginx" leaves peers out of the rounds (quicker A/B runs).
for skip in ${SKIP:-}; do
  for i in "${!ORDER[@]}"; do [ "${ORDER[$i]}" = "$skip" ] && unset 'ORDER[i]'; done
done
ORDER=("${ORDER[@]}")
PATH_=/
WRK_EXTRA=()
case "$VARIANT" in
  keepalive) ;;
  close) WRK_EXTRA=(-H "Connection: close") ;;
  body64k) PATH_=/64k ;;
  *) echo "unknown VARIANT $VARIANT" >&2; exit 2 ;;
esac

for peer in "${ORDER[@]}"; do
  for i in $(seq 50); do
    curl -fs "http://127.0.0.1:${PORTS[$peer]}$PATH_" >/dev/null && break
    [ "$i" = 50 ] && { echo "$peer does not answer; its log:" >&2; cat "$WORK/$peer.log" 2>/dev/null >&2; exit 1; }
    sleep 0.2
  done
done

# wrk's latency figures to milliseconds.
to_ms() { python3 -c "
import re,sys
v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v)
n=float(m.group(1)); u=m.group(2)
print(n/1000 if u=='us' else n*1000 if u=='s' else n)" "$1"; }

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for c in $CONNS; do
  for round in $(seq "$ROUNDS"); do
    for peer in "${ORDER[@]}"; do
      raw="$OUT/c$c-r$round-$peer.txt"
      wrk -t1 -c"$c" -d"$DURATION" --latency "${WRK_EXTRA[@]}" "http://127.0.0.1:${PORTS[$peer]}$PATH_" > "$raw" 2>&1 || true
      rps=$(awk '/Requests\/sec/ {print $2}' "$raw")
      p50=$(awk '/^ +50%/ {print $2}' "$raw")
      p99=$(awk '/^ +99%/ {print $2}' "$raw")
      non2xx=$(awk '/Non-2xx/ {print $5}' "$raw")
      sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$raw")
      echo -e "$c\t$peer\t$round\t${rps:-0}\t$(to_ms "${p50:-0us}")\t$(to_ms "${p99:-0us}")\t$(( ${non2xx:-0} + ${sockerr:-0} ))" >> "$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$VARIANT" "$ROUNDS" "$DURATION" <<'EOF' | tee "$OUT/table.txt"
import statistics, sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(list)
for c, peer, rnd, rps, p50, p99, err in rows:
    by[(int(c), peer)].append((float(rps), float(p50), float(p99), int(err)))
print(f"variant {sys.argv[2]}: wrk -t1, {sys.argv[3]} alternating rounds of {sys.argv[4]}, medians")
print(f"{'conns':>5}  {'peer':<12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs cutover':>10}")
for c in sorted({k[0] for k in by}):
    base = statistics.median(r[0] for r in by[(c, "cutover")])
    for peer in ["direct", "cutover", "before", "cutover+log", "pingora", "haproxy", "nginx", "caddy"]:
        runs = by.get((c, peer))
        if not runs:
            continue
        rps = statistics.median(r[0] for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        err = sum(r[3] for r in runs)
        print(f"{c:>5}  {peer:<12} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f} {err:>7} {rps / base:>9.2f}x")
EOF
