#!/usr/bin/env bash
# TLS peer harness (run by hand, not in CI; `make bench-tls`): cutover
# against HAProxy (OpenSSL) and nginx (OpenSSL) in the same run, on the same
# machine, one worker thread each, the same self-signed ECDSA P-256
# certificate, keep-alive to the same tiny backend, logs off. Turns
# alternate (A B C … A B C …) so drift hits every peer alike.
#
#   benches/tls_peers.sh                       # every variant
#   VARIANTS="handshake" ROUNDS=5 benches/tls_peers.sh
#
# Variants:
#   handshake  a full TLS handshake per request (wrk, `Connection: close`,
#              no session resumption: wrk starts a fresh session per connection)
#   keepalive  keep-alive HTTPS/1.1 requests (wrk)
#   h2         HTTP/2 over TLS, 100 streams per connection (h2load -m 100)
# Output: a table of medians over rounds (req/s, ratio to cutover); raw
# output in benches/results/tls/.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}            # seconds per turn
CONNS=${CONNS:-64}                 # wrk connections
H2_CONNS=${H2_CONNS:-8}            # h2load connections (x 100 streams)
VARIANTS=${VARIANTS:-"handshake keepalive h2"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/cutover-tls-peers.XXXXXX)
chmod 755 "$WORK"
OUT="$ROOT/benches/results/tls"
mkdir -p "$OUT"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

need=()
for tool in wrk haproxy nginx h2load openssl; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: wrk haproxy nginx-light nghttp2-client openssl"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk haproxy nginx-light nghttp2-client openssl
fi
(cd "$ROOT" && cargo build --release --bins -q)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- one certificate for every peer (ECDSA P-256: what an ACME client
# --- gets by default, and cheap to sign with).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/haproxy.pem"

# --- the backend: nginx answering a tiny body, started by cutover as its
# --- app, so every proxy shares that one process.
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
    location / { return 200 "hello from the backend\n"; }
  }
}
EOF

cat > "$WORK/cutover.yaml" <<EOF
proxy:
  listen: ["127.0.0.1:18091"]
  threads: 1
  limits: { max_connections: 20000 }
  tls:
    listen: ["127.0.0.1:18092"]
    certificates: [{ hosts: [localhost], cert: $WORK/cert.pem, key: $WORK/key.pem }]
admin: { listen: "127.0.0.1:18191" }
state_dir: $WORK/state
apps:
  backend:
    command: ["$WORK/backend.sh"]
    health: { path: /health, interval: 200ms, timeout: 1s, start_timeout: 10s }
routes:
  - { host: "*", path: /, app: backend }
EOF
"$ROOT/target/release/cutover" up -c "$WORK/cutover.yaml" --access-log off > "$WORK/cutover.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do
  curl -fsk --resolve localhost:18092:127.0.0.1 https://localhost:18092/ >/dev/null && break
  [ "$i" = 100 ] && { echo "cutover does not answer over TLS; its log:" >&2; cat "$WORK/cutover.log" >&2; exit 1; }
  sleep 0.1
done
BACKEND=$(curl -fs http://127.0.0.1:18191/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["apps"][0]["instances"][0]["address"])')
echo "backend (started by cutover): $BACKEND"

cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:18093 ssl crt $WORK/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2
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
events { worker_connections 9000; }
http {
  access_log off;
  upstream b { server $BACKEND; keepalive 256; }
  server {
    listen 127.0.0.1:18094 ssl http2 backlog=4096;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    http2_max_concurrent_streams 128;
    keepalive_requests 1000000;
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

declare -A PORTS=([cutover]=18092 [haproxy]=18093 [nginx]=18094)
ORDER=(cutover haproxy nginx)
for peer in "${ORDER[@]}"; do
  for i in $(seq 50); do
    curl -fsk --resolve "localhost:${PORTS[$peer]}:127.0.0.1" "https://localhost:${PORTS[$peer]}/" >/dev/null && break
    [ "$i" = 50 ] && { echo "$peer does not answer; its log:" >&2; cat "$WORK/$peer.log" 2>/dev/null >&2; exit 1; }
    sleep 0.2
  done
done

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for variant in $VARIANTS; do
  for round in $(seq "$ROUNDS"); do
    for peer in "${ORDER[@]}"; do
      port=${PORTS[$peer]}
      raw="$OUT/$variant-r$round-$peer.txt"
      case "$variant" in
        handshake)
          wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Connection: close" "https://localhost:$port/" > "$raw" 2>&1 || true
          rps=$(awk '/Requests\/sec/ {print $2}' "$raw")
          err=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$raw") ;;
        keepalive)
          wrk -t1 -c"$CONNS" -d"${DURATION}s" "https://localhost:$port/" > "$raw" 2>&1 || true
          rps=$(awk '/Requests\/sec/ {print $2}' "$raw")
          err=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$raw") ;;
        h2)
          h2load -t1 -c"$H2_CONNS" -m100 -D"$DURATION" "https://localhost:$port/" > "$raw" 2>&1 || true
          rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' "$raw")
          err=$(awk '/^requests:/ {print $10 + $12 + $14}' "$raw") ;;
        *) echo "unknown variant $variant" >&2; exit 2 ;;
      esac
      echo -e "$variant\t$peer\t$round\t${rps:-0}\t${err:-0}" >> "$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$ROUNDS" "$DURATION" "$CONNS" "$H2_CONNS" <<'EOF' | tee "$OUT/table.txt"
import statistics, sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(list)
for variant, peer, rnd, rps, err in rows:
    by[(variant, peer)].append((float(rps or 0), int(float(err or 0))))
print(f"{sys.argv[2]} alternating rounds of {sys.argv[3]} s, medians; wrk -t1 -c{sys.argv[4]}, h2load -t1 -c{sys.argv[5]} -m100")
print(f"{'variant':<10} {'peer':<8} {'req/s':>10} {'errors':>7} {'cutover vs peer':>16}")
for variant in dict.fromkeys(r[0] for r in rows):
    base = statistics.median(r[0] for r in by[(variant, "cutover")])
    for peer in ["cutover", "haproxy", "nginx"]:
        runs = by.get((variant, peer))
        if not runs:
            continue
        rps = statistics.median(r[0] for r in runs)
        err = sum(r[1] for r in runs)
        ratio = f"{base / rps:.2f}x" if rps else "-"
        print(f"{variant:<10} {peer:<8} {rps:>10.0f} {err:>7} {ratio:>16}")
EOF
