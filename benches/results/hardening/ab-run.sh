#!/bin/bash
# run.sh BIN CONNS -> prints req/s
BIN=$1; C=$2
rm -rf /tmp/ab/state
$BIN up -c /tmp/ab/ab.yaml --access-log off > /tmp/ab/cut.log 2>&1 &
P=$!
for i in $(seq 100); do curl -fs http://127.0.0.1:28081/ >/dev/null && break; sleep 0.1; done
wrk -t1 -c$C -d2s http://127.0.0.1:28081/ >/dev/null
R=$(wrk -t1 -c$C -d5s http://127.0.0.1:28081/ | grep Requests/sec | awk '{print $2}')
kill -TERM $P; wait $P 2>/dev/null
echo "$(basename $(dirname $(dirname $(dirname $BIN)))) c=$C $R"
