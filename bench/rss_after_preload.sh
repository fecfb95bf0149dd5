#!/usr/bin/env bash
# Resident memory per node after preloading KEYS keys (100-byte values, pipelined
# SETs) into a fresh local 3-node cluster, with the entity cache's size and count.
#
#   OVR="cache_mb = 8192" bench/rss_after_preload.sh 200000   # everything cached
#   OVR="cache_mb = 16" bench/rss_after_preload.sh 200000     # (almost) nothing cached
#
# The difference of the two, divided by the keys, is what a cached entity costs.
# BIN (target/release/paxosstore), OVR ("key = value" settings separated by ';',
# replacing the demo's), PORT (18900: client port of node 0).
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:?usage: bench/rss_after_preload.sh KEYS}
BIN=${BIN:-target/release/paxosstore}
BENCH=${BENCH:-target/release/paxosstore-bench}
PORT=${PORT:-18900}
W=$(mktemp -d /tmp/rss_after_preload.XXXXXX)
# shellcheck source=bench/local_cluster.sh
. bench/local_cluster.sh
start_local_cluster
rss() { echo "$(($(ps -o rss= -p "$1") / 1024))"; }
for i in "${!pids[@]}"; do echo "node $i RSS before: $(rss "${pids[$i]}") MiB"; done
"$BENCH" --target "$TARGET" \
    --value-size 100 -c 64 -P 16 -d 1 --warmup 0 --mix get=1 --keys "$KEYS" --preload \
    --no-progress | grep -E '^preload'
for i in "${!pids[@]}"; do echo "node $i RSS after: $(rss "${pids[$i]}") MiB"; done
curl -s "127.0.0.1:$((PORT + 20000))/metrics" | grep -E '^paxosstore_(entities_cached|cached_bytes)' |
    sed 's/^/node 0 /'
