#!/usr/bin/env bash
# Where a durable write's CPU goes on this machine, from parts measured in one run, and
# what that leaves for the rest: the write targets of issue 7 are CPU budgets on 2 cores.
#
#   bench/cpu_budget.sh            # about 2 minutes
#
# Measures, one after the other on this machine:
#   1. redis-server (appendonly yes, appendfsync always): its own CPU per SET and per
#      GET, the load generator's CPU per operation, and ops/s (64 clients, 100 bytes);
#   2. storage alone (crates/storage/examples/write_bench, the server's row shape, 16
#      updates per submission): the group-commit writer's CPU per durable update;
#   3. a fresh 3-node paxosstore cluster (bench/local_cluster.sh) under the same write
#      load: server CPU per write split by thread (IO threads, group-commit writers,
#      the rest: fjall's flush and compaction threads), updates persisted per write,
#      and the load generator's CPU per write.
# Then prints the budget: the CPU the machine has per write at a given writes/s, less
# the load generator, a front end as cheap as Redis's GET and the storage floor times
# the updates every write needs, is what consensus, peer messages and execution may
# cost on the three nodes together.
#
# BIN, BENCH, PORT (18500), D (seconds per run, 8), RPORT (16391: redis), REDIS
# (redis-server). Needs redis-server, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/paxosstore}
BENCH=${BENCH:-target/release/paxosstore-bench}
PORT=${PORT:-18500}
D=${D:-8}
RPORT=${RPORT:-16391}
REDIS=${REDIS:-redis-server}
W=$(mktemp -d /tmp/cpu_budget.XXXXXX)
HZ=$(getconf CLK_TCK)
for t in "$BIN" "$BENCH"; do
    [ -x "$t" ] || { echo "missing $t: cargo build --release --workspace --bins" >&2; exit 1; }
done
command -v "$REDIS" >/dev/null || { echo "missing $REDIS (apt-get install redis-server)" >&2; exit 1; }
cargo build --release -q -p storage --example write_bench
WB=${CARGO_TARGET_DIR:-target}/release/examples/write_bench

# shellcheck source=bench/local_cluster.sh
. bench/local_cluster.sh
rpid=""
stop_redis() { [ -n "$rpid" ] && kill "$rpid" 2>/dev/null && wait "$rpid" 2>/dev/null; rpid=""; }
trap 'stop_redis; cleanup' EXIT

# Runs the load generator; prints its ops, ops/s and its own CPU seconds.
loadgen() { # out.json args...
    local out=$1
    shift
    python3 - "$BENCH" --value-size 100 --no-progress --warmup 0 -c 64 -d "$D" --json "$out" "$@" <<'PY'
import json, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
d = json.load(open(sys.argv[sys.argv.index("--json") + 1]))
print(d["ops"], f"{d['throughput']:.0f}", f"{u.ru_utime + u.ru_stime:.3f}")
sys.exit(r.returncode)
PY
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== 1/3 redis-server, appendfsync always" >&2
mkdir -p "$W/redis"
"$REDIS" --port "$RPORT" --dir "$W/redis" --appendonly yes --appendfsync always --save '' \
    --daemonize no >"$W/redis.log" 2>&1 &
rpid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$RPORT") 2>/dev/null && break; sleep 0.1; done
r0=$(ticks "$rpid"); read -r rset_ops rset_tp rset_lg < <(loadgen "$W/rset.json" --target "resp://127.0.0.1:$RPORT" --mix set=1 --keys 10000); r1=$(ticks "$rpid")
read -r rget_ops rget_tp rget_lg < <(loadgen "$W/rget.json" --target "resp://127.0.0.1:$RPORT" --mix get=1 --keys 10000); r2=$(ticks "$rpid")
stop_redis

echo "== 2/3 storage alone (write_bench --whole --per-submit 16)" >&2
wb=$("$WB" --dir "$W/wb" --writers 8 --secs 4 --whole --keys 10000 --per-submit 16 | tail -1)
st_cpu=$(echo "$wb" | awk -F'|' '{gsub(/ /, "", $7); print $7}')
st_rate=$(echo "$wb" | awk -F'|' '{gsub(/ /, "", $3); print $3}')

echo "== 3/3 paxosstore, 3 nodes" >&2
start_local_cluster
# The nodes' CPU ticks by thread kind: io (the tokio threads), gc (group commit), other.
by_thread() {
    local p t comm
    local io=0 gc=0 other=0
    for p in "${pids[@]}"; do
        for t in /proc/"$p"/task/*; do
            comm=$(cat "$t/comm" 2>/dev/null) || continue
            v=$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null) || continue
            case "$comm" in
                storage-group-c*) gc=$((gc + v)) ;;
                bin | tokio-*) io=$((io + v)) ;;
                *) other=$((other + v)) ;;
            esac
        done
    done
    echo "$io $gc $other"
}
updates() { # persisted updates, all three nodes
    local n=0 i v
    for i in 0 1 2; do
        v=$(curl -s "127.0.0.1:$((PORT + 20000 + i))/metrics" | awk '/^paxosstore_fsync_updates /{print $2}')
        n=$((n + ${v:-0}))
    done
    echo "$n"
}
read -r io0 gc0 ot0 < <(by_thread); u0=$(updates)
read -r pset_ops pset_tp pset_lg < <(loadgen "$W/pset.json" --target "$TARGET" --mix set=1 --keys 10000)
read -r io1 gc1 ot1 < <(by_thread); u1=$(updates)

python3 - "$HZ" "$rset_tp $rget_tp $pset_tp" "$rset_ops" "$rset_lg" "$((r1 - r0))" "$rget_ops" "$rget_lg" "$((r2 - r1))" \
    "$st_cpu" "$st_rate" "$pset_ops" "$pset_lg" "$((io1 - io0))" "$((gc1 - gc0))" "$((ot1 - ot0))" \
    "$((u1 - u0))" <<'PY'
import sys
a = sys.argv[1:]
hz = float(a[0])
rset_tp, rget_tp, p_tp = (float(x) for x in a[1].split())
rset_ops, rset_lg, rset_t = int(a[2]), float(a[3]), int(a[4])
rget_ops, rget_lg, rget_t = int(a[5]), float(a[6]), int(a[7])
st_cpu, st_rate = float(a[8]), float(a[9])
p_ops, p_lg, io, gc, ot, upd = int(a[10]), float(a[11]), int(a[12]), int(a[13]), int(a[14]), int(a[15])
us = lambda ticks, ops: ticks * 1e6 / hz / max(ops, 1)
lg_set = rset_lg * 1e6 / rset_ops
redis_set, redis_get = us(rset_t, rset_ops), us(rget_t, rget_ops)
p_lg_us = p_lg * 1e6 / p_ops
p_io, p_gc, p_ot = us(io, p_ops), us(gc, p_ops), us(ot, p_ops)
per_write_updates = upd / p_ops
print("| part | measured |")
print("| --- | --- |")
print(f"| redis SET: ops/s; redis-server CPU per SET | {rset_tp:,.0f}; {redis_set:.1f} us |")
print(f"| redis GET: ops/s; redis-server CPU per GET | {rget_tp:,.0f}; {redis_get:.1f} us |")
print(f"| load generator CPU per SET (against redis) | {lg_set:.1f} us |")
print(f"| storage alone: durable updates/s; writer CPU per update | {st_rate:,.0f}; {st_cpu:.2f} us |")
print(f"| paxosstore SET: ops/s | {p_tp:,.0f} |")
print(f"| paxosstore server CPU per SET: IO threads; group commit; other threads | {p_io:.1f}; {p_gc:.1f}; {p_ot:.1f} us (sum {p_io + p_gc + p_ot:.1f}) |")
print(f"| paxosstore updates persisted per SET (3 nodes); group-commit CPU per update | {per_write_updates:.2f}; {gc * 1e6 / hz / max(upd, 1):.2f} us |")
print(f"| load generator CPU per SET (against paxosstore) | {p_lg_us:.1f} us |")
print()
target = 0.7 * rset_tp
floor = lg_set + redis_get + 3 * st_cpu
have = 2e6 / target
print(f"Budget at 0.7 x redis = {target:,.0f} writes/s on 2 cores: {have:.1f} us of CPU per write.")
print(f"Spent before any consensus: load generator {lg_set:.1f} + a front end as cheap as redis's GET {redis_get:.1f}"
      f" + 3 durable updates x {st_cpu:.2f} = {floor:.1f} us.")
print(f"Left for consensus, peer messages and execution on the 3 nodes: {have - floor:.1f} us per write;"
      f" paxosstore spends {p_io + p_gc + p_ot - redis_get - 3 * st_cpu:.1f} us on them now.")
PY
