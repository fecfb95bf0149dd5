#!/usr/bin/env bash
# Memory and disk over a long run: a fresh local 3-node cluster under one workload for
# D seconds, sampling every 10 s each node's RSS and node 0's data directory (files,
# MiB). A number that keeps climbing under a steady workload is a leak: this found the
# metrics recorder's buffers and fjall's frozen version collection (BENCHMARKS.md,
# eleventh session).
#
#   bench/growth.sh                              # 300 s of set/get/incr, 4 deep
#   D=150 MIX="set=1" P=1 bench/growth.sh
#
# D (300): seconds. MIX ("set=1,get=1,incr=1"), P (4: pipeline depth), KEYS (10000):
# the workload of 64 clients. BIN, BENCH, PORT (18700), OVR, KEEP: as in
# bench/cpu_per_op.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/paxosstore}
BENCH=${BENCH:-target/release/paxosstore-bench}
PORT=${PORT:-18700}
D=${D:-300}
W=$(mktemp -d /tmp/growth.XXXXXX)
# shellcheck source=bench/local_cluster.sh
. bench/local_cluster.sh
start_local_cluster
"$BENCH" --target "$TARGET" -c 64 -P "${P:-4}" -d "$D" --mix "${MIX:-set=1,get=1,incr=1}" \
    --keys "${KEYS:-10000}" --value-size 100 --no-progress >"$W/bench.txt" 2>&1 &
bench_pid=$!
echo "seconds  RSS MiB (node 0, 1, 2)  node 0 data: files, MiB"
for ((t = 10; t <= D; t += 10)); do
    sleep 10
    rss=""
    for p in "${pids[@]}"; do rss+="$(awk '/VmRSS/{printf "%5d", $2 / 1024}' "/proc/$p/status") "; done
    echo "$t  $rss  $(find "$W/d/node0" -type f | wc -l) $(du -sm "$W/d/node0" | cut -f1)"
done
wait "$bench_pid"
grep -E '^all|^errors' "$W/bench.txt"
