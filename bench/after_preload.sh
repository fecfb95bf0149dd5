#!/usr/bin/env bash
# A fresh local 3-node cluster preloaded with K keys (pipelined SETs), then, on that
# cluster: 10 s of pipelined writes over the K keys, 10 s of reads over them, each
# with the nodes' CPU per operation; each node's RSS and node 0's data directory
# size; and with FAILOVER=1 the side-by-side failover run (64 clients over 10 000
# keys, node 1 SIGKILLed at 3.33 s, acknowledged writes verified).
#
#   K=3000000 bench/after_preload.sh
#   OVR="data_block_kb = 4" K=3000000 FAILOVER=1 bench/after_preload.sh
#
# BIN (target/release/paxosstore), BENCH (target/release/paxosstore-bench), PORT
# (19000), OVR: as in bench/cpu_per_op.sh. KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/paxosstore}
BENCH=${BENCH:-target/release/paxosstore-bench}
PORT=${PORT:-19000}
K=${K:-1000000}
W=$(mktemp -d /tmp/after_preload.XXXXXX)
# shellcheck source=bench/local_cluster.sh
. bench/local_cluster.sh
start_local_cluster
t0=$SECONDS
"$BENCH" --target "$TARGET" -c 64 -P 16 --mix set=1 --keys "$K" --preload --value-size 100 --no-progress >/dev/null
echo "preload of $K keys: $((SECONDS - t0)) s"
for wl in "-c 64 -P 16 -d 10 --warmup 1 --mix set=1 --keys $K" "-c 64 -d 10 --warmup 1 --mix get=1 --keys $K"; do
    c0=$(cluster_cpu)
    # shellcheck disable=SC2086
    out=$("$BENCH" --target "$TARGET" --value-size 100 --no-progress $wl | grep -E '^all ')
    c1=$(cluster_cpu)
    ops=$(echo "$out" | awk '{print $2}')
    # /proc times are in 1/100 s: x 10 000 / ops gives microseconds per op.
    echo "$wl | $out | server CPU per op $(((c1 - c0) * 10000 / ops)) us"
done
for i in "${!pids[@]}"; do echo "node $i RSS $(ps -o rss= -p "${pids[$i]}") KiB"; done
echo "node 0 data directory: $(du -sh "$W/d/node0" | cut -f1)"
if [ -n "${FAILOVER:-}" ]; then
    "$BENCH" --target "$TARGET" --value-size 100 --no-progress -c 64 -d 10 --warmup 1 \
        --mix set=1 --keys 10000 --verify --fault-at 3.33 --fault-cmd "kill -9 ${pids[1]}" 2>&1 |
        grep -E '^all |longest|fault at|verify' || true
fi
