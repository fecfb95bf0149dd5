#!/usr/bin/env bash
# Where a durable write's CPU goes on this machine, in one run of about a minute: the
# parts of the side-by-side report's CPU budget (BENCHMARKS.md) measured alone, plus
# paxosstore's own split by thread.
#
#   bench/cpu_budget.sh
#
# Measures, one after the other:
#   1. redis-server (appendonly yes, appendfsync always): its CPU per SET and per GET
#      and the load generator's per operation (64 clients, 100 bytes, 10 000 keys);
#   2. storage alone (crates/storage/examples/write_bench, the server's row shape, 16
#      updates per submission): the group-commit writer's CPU per durable update;
#   3. a fresh 3-node paxosstore cluster (bench/local_cluster.sh) under the same
#      writes: server CPU per write split by thread kind (IO threads, group-commit
#      writers, the rest: fjall's flush and compaction threads; shares of the whole
#      run applied to the measured window's CPU per write), the updates persisted per
#      write (warm-up included, estimated at the measured rate) and the group-commit
#      CPU per update.
# Then the budget at 0.7 x redis's writes/s, as the report computes it.
#
# BIN, BENCH, PORT (18500), D (seconds per run, 8), RPORT (16391: redis). Needs
# redis-server, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/paxosstore}
BENCH=${BENCH:-target/release/paxosstore-bench}
PORT=${PORT:-18500}
D=${D:-8}
RPORT=${RPORT:-16391}
W=$(mktemp -d /tmp/cpu_budget.XXXXXX)
HZ=$(getconf CLK_TCK)
for t in "$BIN" "$BENCH"; do
    [ -x "$t" ] || { echo "missing $t: cargo build --release --workspace --bins" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "missing redis-server (apt-get install redis-server)" >&2; exit 1; }
cargo build --release -q -p storage --example write_bench
WB=${CARGO_TARGET_DIR:-target}/release/examples/write_bench

# shellcheck source=bench/local_cluster.sh
. bench/local_cluster.sh
rpid=""
stop_redis() { if [ -n "$rpid" ]; then kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null || true; rpid=""; fi; }
trap 'stop_redis; cleanup' EXIT

# One load-generator run (its JSON to $1) measuring the CPU of the pids in $2.
loadgen() {
    local out=$1 pids=$2
    shift 2
    "$BENCH" --value-size 100 --no-progress --warmup 1 -c 64 -d "$D" --keys 10000 \
        --json "$out" --server-pids "$pids" "$@" >/dev/null
}

echo "== 1/3 redis-server, appendfsync always" >&2
mkdir -p "$W/redis"
redis-server --port "$RPORT" --dir "$W/redis" --appendonly yes --appendfsync always --save '' \
    --daemonize no >"$W/redis.log" 2>&1 &
rpid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$RPORT") 2>/dev/null && break; sleep 0.1; done
loadgen "$W/rset.json" "$rpid" --target "resp://127.0.0.1:$RPORT" --mix set=1
loadgen "$W/rget.json" "$rpid" --target "resp://127.0.0.1:$RPORT" --mix get=1
stop_redis

echo "== 2/3 storage alone (write_bench --whole --per-submit 16)" >&2
"$WB" --dir "$W/wb" --writers 8 --secs 4 --whole --keys 10000 --per-submit 16 >"$W/floor.txt"

echo "== 3/3 paxosstore, 3 nodes" >&2
start_local_cluster
# The nodes' CPU ticks by thread kind: io (the main/tokio threads), gc (group commit),
# other.
by_thread() {
    local p t comm v io=0 gc=0 other=0
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
read -r io0 gc0 ot0 < <(by_thread)
u0=$(updates)
loadgen "$W/pset.json" "$(IFS=,; echo "${pids[*]}")" --target "$TARGET" --mix set=1
read -r io1 gc1 ot1 < <(by_thread)
u1=$(updates)

python3 - "$W" "$HZ" "$((io1 - io0))" "$((gc1 - gc0))" "$((ot1 - ot0))" "$((u1 - u0))" <<'PY'
import json, sys
w, hz = sys.argv[1], float(sys.argv[2])
io, gc, ot, upd = (int(x) for x in sys.argv[3:7])
def load(name):
    d = json.load(open(f"{w}/{name}.json"))
    return d, d["cpu"]["client_s"] * 1e6 / d["ops"], d["cpu"]["server_s"] * 1e6 / d["ops"]
rset, rset_lg, rset_srv = load("rset")
rget, _, rget_srv = load("rget")
pset, pset_lg, pset_srv = load("pset")
row = [l for l in open(f"{w}/floor.txt") if l.startswith("| ") and l[2].isdigit()][-1]
cells = [c.strip() for c in row.strip().strip("|").split("|")]
st_rate, st_cpu = float(cells[1]), float(cells[5])
# The thread counters span the whole run (warm-up too): they give shares of the
# measured window's CPU per write, and the updates are counted the same way.
total = max(io + gc + ot, 1)
us = lambda ticks: pset_srv * ticks / total
per_write_updates = upd / max(pset["ops_total"] * (1 + 1 / pset["measured_s"]), 1)
print("| part | measured |")
print("| --- | --- |")
print(f"| redis SET: ops/s; redis-server CPU per SET | {rset['throughput']:,.0f}; {rset_srv:.1f} us |")
print(f"| redis GET: ops/s; redis-server CPU per GET | {rget['throughput']:,.0f}; {rget_srv:.1f} us |")
print(f"| load generator CPU per SET: against redis; against paxosstore | {rset_lg:.1f}; {pset_lg:.1f} us |")
print(f"| storage alone: durable updates/s; writer CPU per update | {st_rate:,.0f}; {st_cpu:.2f} us |")
print(f"| paxosstore SET: ops/s; server CPU per SET | {pset['throughput']:,.0f}; {pset_srv:.1f} us |")
print(f"| paxosstore server CPU per SET by thread: IO; group commit; other | {us(io):.1f}; {us(gc):.1f}; {us(ot):.1f} us |")
print(f"| paxosstore updates persisted per SET (3 nodes); group-commit CPU per update | {per_write_updates:.2f}; {gc * 1e6 / hz / max(upd, 1):.2f} us |")
target = 0.7 * rset["throughput"]
have = 2e6 / target
before = min(rset_lg, pset_lg) + rget_srv + 3 * st_cpu
print()
print(f"Budget at 0.7 x redis = {target:,.0f} writes/s on 2 cores: {have:.1f} us of CPU per write; "
      f"before consensus {before:.1f} us (load generator + a front end as cheap as redis's GET "
      f"+ 3 durable updates at storage's floor); left {have - before:.1f} us; "
      f"paxosstore spends {pset_srv - rget_srv - 3 * st_cpu:.1f} us on consensus, messages and execution.")
PY
