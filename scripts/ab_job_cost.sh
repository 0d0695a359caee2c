#!/bin/bash
# Alternating pairs: the fixed cost of a checkpoint job (a tiny process, leave_running, ?wait=true)
# on two ckptd binaries (release builds), one after the other in alternating order, medians
# printed. Usage: scripts/ab_job_cost.sh OLD_BINARY NEW_BINARY [ROUNDS]. Not part of make test.
set -e
OLD=$1; NEW=$2; N=${3:-40}
for v in old new; do
  rm -rf /var/tmp/ab-$v; mkdir -p /var/tmp/ab-$v
done
$OLD --socket /var/tmp/ab-old/s --state-dir /var/tmp/ab-old/state >/var/tmp/ab-old/log 2>&1 &
PO=$!
$NEW --socket /var/tmp/ab-new/s --state-dir /var/tmp/ab-new/state >/var/tmp/ab-new/log 2>&1 &
PN=$!
trap 'kill $PO $PN $T 2>/dev/null' EXIT
python3 -c 'import time
while True: time.sleep(0.05)' & T=$!
sleep 2
one() { # socket name -> seconds
  curl -s -o /dev/null -w '%{time_total}\n' --unix-socket $1 -X POST -H 'content-type: application/json' \
    -d "{\"target\":{\"kind\":\"process\",\"pid\":$T},\"name\":\"$2\",\"leave_running\":true}" \
    'http://ckptd/v1/checkpoints?wait=true'
  curl -s -o /dev/null --unix-socket $1 -X DELETE "http://ckptd/v1/checkpoints/$2"
}
for i in $(seq 1 $N); do
  if [ $((i % 2)) = 0 ]; then
    echo "old $(one /var/tmp/ab-old/s o$i)"; echo "new $(one /var/tmp/ab-new/s n$i)"
  else
    echo "new $(one /var/tmp/ab-new/s n$i)"; echo "old $(one /var/tmp/ab-old/s o$i)"
  fi
done > /var/tmp/ab.txt
python3 - <<'PY'
import statistics
d={'old':[],'new':[]}
for l in open('/var/tmp/ab.txt'):
    k,v=l.split(); d[k].append(float(v))
for k in ('old','new'):
    v=sorted(d[k]); print(k, 'n=%d median=%.1f ms p10=%.1f p90=%.1f' % (len(v), statistics.median(v)*1e3, v[len(v)//10]*1e3, v[len(v)*9//10]*1e3))
PY
