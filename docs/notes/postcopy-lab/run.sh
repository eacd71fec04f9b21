#!/bin/bash
# run.sh MODE BALLAST_MIB [RATE] [FAULT_AT_S]
# MODE: baseline | lazy | killps | killlp | gkillps | gkilllp  (g* = with guard.py)
# Every experiment: fresh netns pair, source container in postcopy-a, client in postcopy-a,
# destination container in postcopy-b. Output dir: $LAB/runs/MODE-BALLAST-RATE
source /tmp/postcopy-lab/lab.sh
MODE=$1; BAL=$2; RATE=${3:-none}; FAULT_AT=${4:-2}
R=$LAB/runs/$MODE-$BAL-$RATE; rm -rf "$R"; mkdir -p "$R"; cd "$R"
A=$R/img-full; B=$R/img-dst; WA=$R/wa; WB=$R/wb; WP=$R/wp
mkdir -p $A $B $WA $WB $WP
SS="--root $LAB/state-src"; DS="--root $LAB/state-dst"
PIDS=()
t() { echo "$1 $(now)" >> times; }
cleanup() {
  touch $R/stop
  for p in "${PIDS[@]}"; do kill -9 $p 2>/dev/null; done
  $RUNC $DS delete -f pc-dst 2>/dev/null; $RUNC $SS delete -f pc-src 2>/dev/null
  unthrottle; net_down
}
trap cleanup EXIT
net_down; net_up
[ "$RATE" != none ] && throttle $RATE
mkbundle src postcopy-a $BAL; mkbundle dst postcopy-b $BAL
$RUNC $SS run -d --bundle $LAB/bundles/src pc-src </dev/null >/dev/null 2>&1 || { echo run failed; exit 1; }
for i in $(seq 200); do ip netns exec postcopy-a $LAB/ask.py $SRCIP CHECK 1 | grep -q OK && break; sleep 0.1; done
echo "src ready: $(ip netns exec postcopy-a $LAB/ask.py $SRCIP CHECK 5)" | tee -a summary
ip netns exec postcopy-a $LAB/client.py $R/client.log $R/stop & PIDS+=($!)
sleep 1
t ckpt_start
$RUNC $SS checkpoint --image-path $A --work-path $WA pc-src || { echo checkpoint failed; exit 1; }
t ckpt_done
echo "full image: $(du -sh $A | cut -f1)" >> summary
# criu.conf has "network-lock skip": otherwise CRIU leaves its iptables DROP lock in the source
# netns after the dump and puts one in the destination netns during restore, which blocks
# page-server / lazy-pages sockets living in those netns (they do not carry mark 0xc114).

if [ $MODE = baseline ]; then
  $RUNC $DS restore -d --image-path $A --work-path $WB --bundle $LAB/bundles/dst pc-dst </dev/null >/dev/null 2>&1 || echo restore failed
  t restored
else
  start_ps() {  # page server on the SOURCE, serving the finished dump in $A
    ip netns exec postcopy-a $CRIU page-server --lazy-pages -D $A --address $SRCIP --port $PSPORT \
      -o $WP/ps$1.log -v4 & PS=$!; PIDS+=($PS)
    for i in $(seq 500); do grep -q "Starting page server" $WP/ps$1.log 2>/dev/null && break; sleep 0.01; done
    if ! grep -q "Starting page server" $WP/ps$1.log; then
      echo "page-server $PS not ready; wchan=$(cat /proc/$PS/wchan) stack:" >> summary; cat /proc/$PS/stack >> summary
      ls -l /proc/$PS/fd >> summary; exit 1; fi
  }
  start_ps 1
  t ps_listening
  python3 $LAB/pmap.py mkdest $A $B >> summary
  t mkdest_done
  echo "dest image dir: apparent $(du -sh --apparent-size $B | cut -f1), on disk $(du -sh $B | cut -f1)" >> summary
  ip netns exec postcopy-b $CRIU lazy-pages --page-server --address $SRCIP --port $PSPORT -D $B -W $WB -o $WB/lp.log -v4 &
  LP=$!; PIDS+=($LP)
  for i in $(seq 500); do [ -S $WB/lazy-pages.socket ] && break; sleep 0.005; done
  t lp_ready
  if [[ $MODE == g* ]]; then
    mkfifo $R/gcmd
    ( exec ip netns exec postcopy-b python3 $LAB/guard.py $LP < $R/gcmd > $R/guard.log 2>&1 ) & GP=$!; PIDS+=($GP)
    exec 7>$R/gcmd
  fi
  $RUNC $DS restore -d --lazy-pages --image-path $B --work-path $WB --bundle $LAB/bundles/dst pc-dst </dev/null >/dev/null 2>&1 || echo restore failed | tee -a summary
  t restored
  HP=$($RUNC $DS state pc-dst | python3 -c 'import json,sys;print(json.load(sys.stdin)["pid"])')
  case $MODE in
    lazy) python3 $LAB/winmon.py $B $HP > winmon.log; t all_present_seen; wait $LP; echo "lazy-pages exit=$?" >> summary; t lp_exit ;;
    glazy) wait $LP; echo "lazy-pages exit=$?" >> summary; t lp_exit; echo release >&7; wait $GP; t guard_released ;;
    killps|gkillps|killlp|gkilllp)
      sleep $FAULT_AT
      if [[ $MODE == *killps ]]; then kill -9 $PS; t killed_ps; else kill -9 $LP; t killed_lp; fi
      wait $LP; echo "lazy-pages exit=$? (after fault)" >> summary; t lp_exit
      sleep 0.5
      echo "dst process alive: $(kill -0 $HP 2>&1 && echo yes || echo no) state=$($RUNC $DS state pc-dst 2>&1 | grep status)" >> summary
      echo "CHECK after fault: $(ip netns exec postcopy-a $LAB/ask.py $DSTIP CHECK 3)" >> summary
      echo "INCR after fault: $(ip netns exec postcopy-a $LAB/ask.py $DSTIP INCR 3)" >> summary
      if [[ $MODE == g* ]]; then
        start_ps 2; t ps_restarted
        echo "rescue $B $SRCIP $PSPORT $HP" >&7
        wait $GP; t rescued
        echo "CHECK after rescue: $(ip netns exec postcopy-a $LAB/ask.py $DSTIP CHECK 5)" >> summary
        echo "INCR after rescue: $(ip netns exec postcopy-a $LAB/ask.py $DSTIP INCR 5)" >> summary
      fi
      if [ -n "$ROLLBACK" ]; then   # roll back: drop destination, restore source from its COMPLETE image
        $RUNC $DS delete -f pc-dst; t dst_deleted
        mkdir -p $R/wa2
        $RUNC $SS restore -d --image-path $A --work-path $R/wa2 --bundle $LAB/bundles/src pc-src </dev/null >/dev/null 2>&1 || echo rollback restore failed | tee -a summary
        t src_restored
        echo "ROLLBACK src CHECK: $(ip netns exec postcopy-a $LAB/ask.py $SRCIP CHECK 5)" >> summary
        echo "ROLLBACK src INCR: $(ip netns exec postcopy-a $LAB/ask.py $SRCIP INCR 5)" >> summary
      fi ;;
  esac
fi
sleep 0.5; touch $R/stop; sleep 0.3
[ -z "$ROLLBACK" ] && echo "CHECK end: $(ip netns exec postcopy-a $LAB/ask.py $DSTIP CHECK 5)" >> summary
python3 $LAB/gaps.py client.log >> summary
python3 - <<'PY' >> summary
t={}
for l in open("times"):
    k,v=l.split(); t[k]=float(v)
b=t["ckpt_start"]
print("timeline (s from checkpoint start): " + " ".join(f"{k}={v-b:.3f}" for k,v in t.items()))
PY
cat summary
