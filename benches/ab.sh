#!/bin/bash
# ab.sh (by hand): two cutover builds (BEFORE, AFTER: default this tree's release build), one worker each, the same nginx backend config, alternating wrk turns (1 s warm-up, 5 s measured); prints "conns build req/s" per turn. CONNS="16 64" ROUNDS=6 BEFORE=/path/to/old/cutover benches/ab.sh
set -e
W=$(mktemp -d /tmp/cutover-ab.XXXXXX)
cat > $W/backend.tmpl <<'E2'
worker_processes 1;
error_log /dev/null crit;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:@PORT@ backlog=4096; location = /health { return 200 "ok\n"; } location / { return 200 "hello from the backend\n"; } } }
E2
cat > $W/backend.sh <<E2
#!/bin/sh
sed "s/@PORT@/\$PORT/" $W/backend.tmpl > $W/backend-\$PORT.conf
exec nginx -p $W -c $W/backend-\$PORT.conf -g "daemon off; pid $W/backend-\$PORT.pid;"
E2
chmod +x $W/backend.sh
for n in new old; do
 p=$([ $n = new ] && echo 28081 || echo 28082); a=$([ $n = new ] && echo 28181 || echo 28182)
 cat > $W/$n.yaml <<E2
proxy: { listen: ["127.0.0.1:$p"], threads: 1 }
admin: { listen: "127.0.0.1:$a" }
state_dir: $W/state-$n
apps:
  backend:
    command: ["$W/backend.sh"]
    health: { path: /health, interval: 200ms, timeout: 1s, start_timeout: 10s }
routes:
  - { host: "*", path: /, app: backend }
E2
done
${AFTER:-$(cd "$(dirname "$0")/.." && pwd)/target/release/cutover} up -c $W/new.yaml --access-log off > $W/new.log 2>&1 & P1=$!
${BEFORE:?set BEFORE to an older cutover binary} up -c $W/old.yaml --access-log off > $W/old.log 2>&1 & P2=$!
trap "kill $P1 $P2; wait" EXIT
for i in $(seq 100); do curl -fs http://127.0.0.1:28081/ >/dev/null && curl -fs http://127.0.0.1:28082/ >/dev/null && break; sleep 0.1; done
for c in ${CONNS:-16}; do for r in $(seq ${ROUNDS:-5}); do for n in new old; do
  p=$([ $n = new ] && echo 28081 || echo 28082)
  wrk -t1 -c$c -d1s http://127.0.0.1:$p/ >/dev/null
  echo "$c $n $(wrk -t1 -c$c -d5s http://127.0.0.1:$p/ | awk '/Requests\/sec/ {print $2}')"
done; done; done
