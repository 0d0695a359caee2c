#!/bin/bash
# Alternating pairs: GET /metrics on two ckptd binaries (release builds), each with 200 schedules
# and 50 checkpoints; medians printed. Usage: scripts/ab_metrics.sh OLD_BINARY NEW_BINARY [ROUNDS].
# Not part of make test.
set -e
OLD=$1; NEW=$2; N=${3:-200}
for v in old new; do rm -rf /var/tmp/abm-$v; mkdir -p /var/tmp/abm-$v; done
$OLD --socket /var/tmp/abm-old/s --state-dir /var/tmp/abm-old/state >/var/tmp/abm-old/log 2>&1 & PO=$!
$NEW --socket /var/tmp/abm-new/s --state-dir /var/tmp/abm-new/state >/var/tmp/abm-new/log 2>&1 & PN=$!
python3 -c 'import time
while True: time.sleep(0.05)' & T=$!
trap 'kill $PO $PN $T 2>/dev/null' EXIT
sleep 2
for v in old new; do
  for i in $(seq 1 200); do
    curl -s -o /dev/null --unix-socket /var/tmp/abm-$v/s -X POST -H 'content-type: application/json' \
      -d "{\"name\":\"s$i\",\"target\":{\"kind\":\"process\",\"pid\":$T},\"cron\":\"0 0 1 1 *\",\"retention\":{}}" http://ckptd/v1/schedules
  done
  for i in $(seq 1 50); do
    curl -s -o /dev/null --unix-socket /var/tmp/abm-$v/s -X POST -H 'content-type: application/json' \
      -d "{\"target\":{\"kind\":\"process\",\"pid\":$T},\"name\":\"c$i\",\"leave_running\":true}" 'http://ckptd/v1/checkpoints?wait=true'
  done
done
one() { curl -s -o /dev/null -w '%{time_total}\n' --unix-socket $1 http://ckptd/metrics; }
for i in $(seq 1 $N); do
  if [ $((i % 2)) = 0 ]; then echo "old $(one /var/tmp/abm-old/s)"; echo "new $(one /var/tmp/abm-new/s)";
  else echo "new $(one /var/tmp/abm-new/s)"; echo "old $(one /var/tmp/abm-old/s)"; fi
done > /var/tmp/abm.txt
curl -s --unix-socket /var/tmp/abm-new/s http://ckptd/metrics | grep -c "^ckptd_schedule_enabled" 
python3 - <<'PY'
import statistics
d={'old':[],'new':[]}
for l in open('/var/tmp/abm.txt'):
    k,v=l.split(); d[k].append(float(v))
for k in ('old','new'):
    v=sorted(d[k]); print(k, 'n=%d median=%.2f ms p90=%.2f' % (len(v), statistics.median(v)*1e3, v[len(v)*9//10]*1e3))
PY
