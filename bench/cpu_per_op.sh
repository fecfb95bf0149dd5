#!/usr/bin/env bash
# Server CPU per operation on a fresh local 3-node cluster: starts the nodes from the
# configs `paxosstore demo` writes (with overrides), runs one paxosstore-bench
# workload, and prints the bench's summary plus the nodes' CPU time (user + system,
# from /proc) and the machine's context switches per completed operation.
#
#   bench/cpu_per_op.sh "-c 64 -d 5 --warmup 1 --mix set=1 --keys 10000"
#   OVR="shards = 2;io_threads = 2" BIN=/tmp/other-build bench/cpu_per_op.sh "..."
#
# BIN (target/release/paxosstore): the server binary. OVR: "key = value" settings,
# separated by ';', replacing the demo's. PORT (18500): client port of node 0.
# A read workload (get=1), or any workload when PRE is set, is preceded by a write
# phase so the keys exist: PRE, the bench arguments of that phase ("-c 64 -d 2 --mix
# set=1 --keys 10000"); for a cold run give it --preload over the run's key count.
# The warm-up's CPU is included, its operations are not: compare runs made alike.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=${1:?usage: bench/cpu_per_op.sh \"<paxosstore-bench args>\"}
BIN=${BIN:-target/release/paxosstore}
BENCH=${BENCH:-target/release/paxosstore-bench}
PORT=${PORT:-18500}
W=$(mktemp -d /tmp/cpu_per_op.XXXXXX)
# shellcheck source=bench/local_cluster.sh
. bench/local_cluster.sh
start_local_cluster
if [[ "$ARGS" == *get=1* || -n "${PRE:-}" ]]; then
    # shellcheck disable=SC2086
    "$BENCH" --target "$TARGET" ${PRE:--c 64 -d 2 --mix set=1 --keys 10000} --value-size 100 --no-progress >/dev/null
fi
c0=$(cluster_cpu)
s0=$(awk '/^ctxt/{print $2}' /proc/stat)
# shellcheck disable=SC2086
"$BENCH" --target "$TARGET" --value-size 100 --no-progress --json "$W/o.json" $ARGS | grep -E '^(op|all) '
c1=$(cluster_cpu)
s1=$(awk '/^ctxt/{print $2}' /proc/stat)
python3 - "$W/o.json" "$((c1 - c0))" "$((s1 - s0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ops = d["ops"] if "ops" in d else d["summary"]["ops"]
ticks, switches, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"server CPU per op: {ticks * 1e6 / hz / ops:.1f} us; context switches per op: {switches / ops:.1f}")
PY
# Node 0's storage work over the run (persisted updates, fsync batches).
curl -s "127.0.0.1:$((PORT + 20000))/metrics" | grep -E '^paxosstore_(fsync_updates|fsync_batches|proposals|entity_loads|evictions|probe_summaries|probes_answered_from_summary|forwarded_total) ' |
    sed 's/^/node 0 /'
echo "node 0 data directory: $(du -sm "$W/d/node0" | cut -f1) MiB; RSS $(awk '/VmRSS/{print int($2/1024)}' "/proc/${pids[0]}/status") MiB"
