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
pids=()
cleanup() {
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
cp "$BIN" "$W/bin"
timeout 2 "$W/bin" demo --nodes 3 --port "$PORT" --data-dir "$W/d" >/dev/null 2>&1 || true
rm -rf "$W/d/node0" "$W/d/node1" "$W/d/node2"
IFS=';' read -ra OV <<< "${OVR:-}"
for i in 0 1 2; do
    for o in "${OV[@]}"; do
        k=$(echo "${o%%=*}" | xargs)
        sed -i "s|^$k = .*|$o|" "$W/d/node$i.toml"
    done
    "$W/bin" server --config "$W/d/node$i.toml" >"$W/node$i.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 150); do
    n=$(curl -s "127.0.0.1:$((PORT + 20000))/status.json" | grep -o '"up(' | wc -l || true)
    [ "$n" -ge 2 ] && break
    sleep 0.2
done
rss() { echo "$(($(ps -o rss= -p "$1") / 1024))"; }
for i in "${!pids[@]}"; do echo "node $i RSS before: $(rss "${pids[$i]}") MiB"; done
"$BENCH" --target "resp://127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))" \
    --value-size 100 -c 64 -P 16 -d 1 --warmup 0 --mix get=1 --keys "$KEYS" --preload \
    --no-progress | grep -E '^preload'
for i in "${!pids[@]}"; do echo "node $i RSS after: $(rss "${pids[$i]}") MiB"; done
curl -s "127.0.0.1:$((PORT + 20000))/metrics" | grep -E '^paxosstore_(entities_cached|cached_bytes)' |
    sed 's/^/node 0 /'
