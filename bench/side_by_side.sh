#!/usr/bin/env bash
# Side-by-side benchmark of Redis (appendonly, appendfsync always), a 3-member
# etcd cluster and a 3-node PaxosStore-rs cluster on this machine, one system at
# a time, with the same workloads; writes bench/results/*.json, PNG plots and
# BENCHMARKS.md (regenerated here — never edit it by hand).
#
#   bench/side_by_side.sh                 # everything (~10 minutes)
#   SYSTEMS="paxosstore" bench/side_by_side.sh
#   DUR=5 bench/side_by_side.sh           # shorter runs
#   SCALE=1 bench/side_by_side.sh         # also preload SCALE_KEYS keys (slow)
#
# Environment (defaults): SYSTEMS="redis etcd paxosstore" DUR=10 (s per workload)
# SDUR=5 (s per 1- and 8-client run; scale runs take DUR) WARMUP=1 CLIENTS=64 VALUE=100 KEYS=10000
# REPEAT=3 (runs of each 64-client scenario; the report shows the median run)
# CONTENDED_KEYS=1000 SCALE=0 SCALE_KEYS="1000000" SCALE_SYSTEMS="paxosstore" (the
# systems preloaded for the scale runs; etcd takes minutes per million keys)
# RES=bench/results OUT=BENCHMARKS.md
# WORK=/tmp/paxosstore-bench.<pid> (data directories; must be a real disk, not
# tmpfs) REBUILD=0 (1: rebuild target/release/paxosstore) PX_PORT=17400
# REDIS_PORT=16390 ETCD_PORT=22379 (clients on ETCD_PORT+2i, peers +2i+1).
#
# Internal: `bench/side_by_side.sh kill-etcd-leader DIR` kills the current etcd
# leader of the cluster started in DIR (used as the failover fault command).

set -uo pipefail

if [ "${1:-}" = "kill-etcd-leader" ]; then
    dir=$2
    eps=$(awk '{print $1}' "$dir/members" | paste -sd, -)
    leader=$(ETCDCTL_API=3 etcdctl --endpoints="$eps" --command-timeout=2s endpoint status -w simple 2>/dev/null |
        awk -F', ' '$5=="true"{print $1}' | head -1)
    if [ -z "$leader" ]; then
        echo "no etcd leader found" >&2
        exit 1
    fi
    pid=$(awk -v ep="$leader" '$1==ep{print $2}' "$dir/members")
    name=$(awk -v ep="$leader" '$1==ep{print $3}' "$dir/members")
    kill -9 "$pid" || exit 1
    echo "SIGKILL etcd leader $name ($leader, pid $pid)"
    exit 0
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

SYSTEMS=${SYSTEMS:-"redis etcd paxosstore"}
DUR=${DUR:-10}
REPEAT=${REPEAT:-3}
SDUR=${SDUR:-5}
WARMUP=${WARMUP:-1}
CLIENTS=${CLIENTS:-64}
VALUE=${VALUE:-100}
KEYS=${KEYS:-10000}
CONTENDED_KEYS=${CONTENDED_KEYS:-1000}
SCALE=${SCALE:-0}
SCALE_KEYS=${SCALE_KEYS:-1000000}
SCALE_SYSTEMS=${SCALE_SYSTEMS:-paxosstore}
RES=${RES:-bench/results}
OUT=${OUT:-BENCHMARKS.md}
WORK=${WORK:-/tmp/paxosstore-bench.$$}
REBUILD=${REBUILD:-0}
PX_PORT=${PX_PORT:-17400}
REDIS_PORT=${REDIS_PORT:-16390}
ETCD_PORT=${ETCD_PORT:-22379}
PXBIN=target/release/paxosstore
BENCH=target/release/paxosstore-bench
SELF="bench/side_by_side.sh"

# The command line as it would be typed, with the non-default environment.
CMD=""
for v in SYSTEMS DUR SDUR WARMUP CLIENTS VALUE KEYS CONTENDED_KEYS SCALE SCALE_KEYS REBUILD; do
    if [ -n "$(printenv $v)" ]; then CMD+="$v=\"${!v}\" "; fi
done
CMD+="$SELF"

log() { echo "[side_by_side $(date +%H:%M:%S)] $*" >&2; }
note() {
    log "NOTE: $*"
    echo "$*" >>"$RES/notes.txt"
}

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. dependencies ---------------------------------------------------------
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null ||
        log "apt-get install failed; systems without their binaries will be skipped"
fi

# --- 2. build ----------------------------------------------------------------
log "building the load generator"
cargo build --release -q -p bench --features etcd || {
    log "cannot build the load generator"
    exit 1
}
# Storage alone, for the report's CPU budget of a write.
cargo build --release -q -p storage --example write_bench || log "cannot build storage's write_bench"
if [ ! -x "$PXBIN" ] || [ "$REBUILD" = 1 ]; then
    log "building paxosstore"
    cargo build --release -q -p paxosstore || log "cannot build paxosstore"
fi

mkdir -p "$RES" "$WORK"
rm -f "$RES"/*.json "$RES"/*.png "$RES"/notes.txt "$RES"/rss.tsv "$RES"/machine.txt "$RES"/systems.txt \
    "$RES"/storage_floor.txt
: >"$RES/notes.txt"

# --- 3. the machine ----------------------------------------------------------
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
{
    echo "nproc: $(nproc)"
    echo "CPU: $(lscpu | grep 'Model name' | sed 's/.*Model name:[[:space:]]*//' | head -1)"
    echo "Memory: $(free -m | awk '/^Mem:/{printf "%.1f GiB", $2/1024}')"
    echo "Kernel: $(uname -sr)"
    echo "Data directories: $WORK on $(df -T "$WORK" | awk 'NR==2{print $2 " (" $1 ")"}')"
    # One small O_DSYNC write ~ one fdatasync: the floor of any durable write.
    t=$( { TIMEFORMAT=%R; time dd if=/dev/zero of="$WORK/dsync.test" bs=128 count=500 oflag=dsync 2>/dev/null; } 2>&1 | tail -1)
    rm -f "$WORK/dsync.test"
    if [ -n "$t" ]; then
        echo "128-byte O_DSYNC write (dd, 500 in a row): $(awk -v t="$t" 'BEGIN{printf "%.3f ms each", t*1000/500}')"
    fi
    echo "Date: $DATE"
    echo "Load average (1/5/15 min) when the run started: $(cut -d' ' -f1-3 /proc/loadavg) — the machine may be shared with other work"
} >"$RES/machine.txt" 2>/dev/null

{
    command -v redis-server >/dev/null && echo "Redis: $(redis-server --version | awk '{print $3}' | sed 's/v=//') — one redis-server, \`--appendonly yes --appendfsync always\`, data dir on the disk above (no replicas: one durable copy)"
    command -v etcd >/dev/null && echo "etcd: $(etcd --version | awk '/etcd Version/{print $3}') (Debian etcd-server) — 3 members on 127.0.0.1, default fsync of the WAL, separate data dirs; reads are linearizable (etcd's default), clients spread over the members"
    if [ -x "$PXBIN" ]; then
        echo "PaxosStore-rs: \`$PXBIN demo --nodes 3\` (3 processes on 127.0.0.1), binary built $(date -u -r "$PXBIN" '+%Y-%m-%d %H:%M UTC'), repository HEAD $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' (with uncommitted changes in the work tree)'); clients spread over the 3 nodes"
    fi
    echo "Load generator: $BENCH (crates/bench), closed loop, one connection per client, pipeline 1; rows of paxosstore-slots: the same paxosstore cluster through a cluster-aware client (\`--route slots\`: a connection per node, each request sent to its key's home from CLUSTER SLOTS)"
} >"$RES/systems.txt"

# --- 4. runs -----------------------------------------------------------------
N=0
TARGET=""
SYS=""
run() { # run SCENARIO ARGS...
    local sc=$1
    shift
    N=$((N + 1))
    local file
    file=$(printf '%s/%02d-%s-%s.json' "$RES" "$N" "$SYS" "$sc")
    log "$SYS / $sc"
    "$BENCH" --target "$TARGET" --system "$SYS" --scenario "$sc" --value-size "$VALUE" \
        --warmup "$WARMUP" --json "$file" --server-pids "$(IFS=,; echo "${SYS_PIDS[*]}")" "$@" \
        >"$WORK/$SYS-$sc.out" 2>&1
    local rc=$?
    cat "$WORK/$SYS-$sc.out" >&2
    if [ $rc -ne 0 ]; then
        note "$SYS / $sc: the load generator exited with status $rc ($(tail -1 "$WORK/$SYS-$sc.out"))"
    fi
}

# The system's processes' CPU time so far (user + system, 1/100 s).
sys_cpu() {
    local t=0 p
    for p in "${SYS_PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo "$t"
}

wait_idle() { # wait_idle LABEL MAX-SECONDS: until the servers used < 5 % of a core over 2 s
    local t0=$SECONDS c0 c1
    while [ $((SECONDS - t0)) -lt "$2" ]; do
        c0=$(sys_cpu)
        sleep 2
        c1=$(sys_cpu)
        if [ $((c1 - c0)) -lt 10 ]; then
            note "$1: servers idle $((SECONDS - t0)) s after the preload ended; measured from then"
            return 0
        fi
    done
    note "$1: servers still busy $2 s after the preload ended; measured anyway"
}

rss() { # rss PROCESS-NAME PID WHEN
    local kib
    kib=$(ps -o rss= -p "$2" 2>/dev/null | tr -d ' ')
    [ -n "$kib" ] && printf '%s\t%s\t%s\t%s\n' "$SYS" "$1" "$3" "$kib" >>"$RES/rss.tsv"
}

# The 64-client scenarios, REPEAT rounds; the report shows each one's median run
# (identical runs here differ by up to 20 %). For paxosstore each round also runs the
# writing scenarios through a cluster-aware client (--route slots: each request sent
# to its key's home from CLUSTER SLOTS, as Redis Cluster clients do), reported as the
# system "paxosstore-slots", so the two alternate.
main_scenarios() {
    local r
    for r in $(seq "$REPEAT"); do
        run write -c "$CLIENTS" -d "$DUR" --mix set=1 --keys "$KEYS"
        if [ "$SYS" = paxosstore ]; then
            SYS=paxosstore-slots
            run write -c "$CLIENTS" -d "$DUR" --mix set=1 --keys "$KEYS" --route slots
            SYS=paxosstore
        fi
        run read -c "$CLIENTS" -d "$DUR" --mix get=1 --keys "$KEYS" --preload
        run mixed -c "$CLIENTS" -d "$DUR" --mix set=1,get=1 --keys "$KEYS"
        if [ "$SYS" = paxosstore ]; then
            SYS=paxosstore-slots
            run mixed -c "$CLIENTS" -d "$DUR" --mix set=1,get=1 --keys "$KEYS" --route slots
            SYS=paxosstore
        fi
        run contended -c "$CLIENTS" -d "$DUR" --mix set=1 --dist zipf --skew 0.99 --keys "$CONTENDED_KEYS"
        if [ "$SYS" = paxosstore ]; then
            SYS=paxosstore-slots
            run contended -c "$CLIENTS" -d "$DUR" --mix set=1 --dist zipf --skew 0.99 --keys "$CONTENDED_KEYS" --route slots
            SYS=paxosstore
        fi
    done
}

suite() { # suite FAULT-CMD (empty: no failover run)
    main_scenarios
    for c in 1 8; do
        run "write-c$c" -c "$c" -d "$SDUR" --mix set=1 --keys "$KEYS"
        run "read-c$c" -c "$c" -d "$SDUR" --mix get=1 --keys "$KEYS"
    done
    if [ "$SCALE" = 1 ] && [[ " $SCALE_SYSTEMS " == *" $SYS "* ]]; then
        for k in $SCALE_KEYS; do
            # The preload alone, then a wait until the servers are idle, so that none
            # of its flushes and compactions overlaps the measurement: right after a
            # 10 M-key preload the writes measured were 79 % of those measured a
            # minute later on the same cluster (BENCHMARKS.md, tenth session). The
            # wait is in the notes.
            log "$SYS / scale-$k: preload"
            "$BENCH" --target "$TARGET" -c "$CLIENTS" -P 16 --mix set=1 --keys "$k" --preload \
                --ops 1 --value-size "$VALUE" --no-progress >"$WORK/$SYS-scale-$k-preload.out" 2>&1 ||
                note "$SYS / scale-$k: the preload exited with status $? ($(tail -1 "$WORK/$SYS-scale-$k-preload.out"))"
            wait_idle "$SYS / scale-$k" 300
            # DUR, not SDUR: one 5 s window is too short to average over flushes.
            run "scale-$k-write" -c "$CLIENTS" -P 16 -d "$DUR" --mix set=1 --keys "$k"
            run "scale-$k-read" -c "$CLIENTS" -d "$DUR" --mix get=1 --keys "$k"
            # Resident memory per node at this key count (the report's scale table).
            for i in "${!SYS_PIDS[@]}"; do rss "${SYS_NAMES[$i]}" "${SYS_PIDS[$i]}" "after scale-$k"; done
        done
    fi
}

failover() { # failover FAULT-CMD
    local at
    at=$(awk -v d="$DUR" 'BEGIN{printf "%.2f", d/3}')
    run failover -c "$CLIENTS" -d "$DUR" --mix set=1 --keys "$KEYS" --verify --fault-at "$at" --fault-cmd "$1"
}

wait_for() { # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.2
    done
}

bench_redis() {
    SYS=redis
    if ! command -v redis-server >/dev/null; then
        note "redis: redis-server is not installed; skipped"
        return
    fi
    local d=$WORK/redis
    rm -rf "$d" && mkdir -p "$d"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$d" --appendonly yes --appendfsync always \
        --save '' --daemonize no --logfile "$d/redis.log" &
    local pid=$!
    PIDS+=("$pid")
    if ! wait_for 20 redis-cli -p "$REDIS_PORT" ping; then
        note "redis: did not start (see $d/redis.log); skipped"
        kill -9 "$pid" 2>/dev/null
        return
    fi
    TARGET="resp://127.0.0.1:$REDIS_PORT"
    SYS_PIDS=("$pid")
    SYS_NAMES=(redis-server)
    suite
    rss redis-server "$pid" "after the workloads"
    note "redis: no failover run — a single server has no replica to fail over to (killing it stops all service until it restarts)."
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid"
    wait "$pid" 2>/dev/null
}

bench_etcd() {
    SYS=etcd
    if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
        note "etcd: etcd/etcdctl are not installed; skipped"
        return
    fi
    local d=$WORK/etcd
    rm -rf "$d" && mkdir -p "$d"
    local cluster="" eps="" i
    for i in 0 1 2; do
        cluster+="${cluster:+,}e$i=http://127.0.0.1:$((ETCD_PORT + 2 * i + 1))"
        eps+="${eps:+,}127.0.0.1:$((ETCD_PORT + 2 * i))"
    done
    : >"$d/members"
    for i in 0 1 2; do
        local cp=$((ETCD_PORT + 2 * i)) pp=$((ETCD_PORT + 2 * i + 1))
        etcd --name "e$i" --data-dir "$d/e$i" \
            --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
            --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
            --initial-cluster "$cluster" --initial-cluster-token "bench-$$" --initial-cluster-state new \
            --logger zap --log-level warn >"$d/e$i.log" 2>&1 &
        local pid=$!
        PIDS+=("$pid")
        echo "127.0.0.1:$cp $pid e$i" >>"$d/members"
    done
    if ! wait_for 60 env ETCDCTL_API=3 etcdctl --endpoints="$eps" endpoint health; then
        note "etcd: cluster did not become healthy (see $d/e*.log); skipped"
        while read -r _ pid _; do kill -9 "$pid" 2>/dev/null; done <"$d/members"
        return
    fi
    TARGET="etcd://$eps"
    SYS_PIDS=()
    SYS_NAMES=()
    while read -r _ pid name; do SYS_PIDS+=("$pid") && SYS_NAMES+=("etcd $name"); done <"$d/members"
    suite
    while read -r ep pid name; do rss "etcd $name" "$pid" "after the workloads, before failover"; done <"$d/members"
    failover "$SELF kill-etcd-leader $d"
    while read -r _ pid _; do kill "$pid" 2>/dev/null; done <"$d/members"
    while read -r _ pid _; do wait "$pid" 2>/dev/null; done <"$d/members"
}

bench_paxosstore() {
    SYS=paxosstore
    if [ ! -x "$PXBIN" ]; then
        note "paxosstore: $PXBIN is missing; skipped"
        return
    fi
    local d=$WORK/paxosstore
    rm -rf "$d"
    # Run a private copy: other builds may replace target/release/paxosstore meanwhile.
    cp "$PXBIN" "$WORK/paxosstore-bin"
    "$WORK/paxosstore-bin" demo --nodes 3 --port "$PX_PORT" --data-dir "$d" >"$WORK/paxosstore-demo.out" 2>&1 &
    local demo=$!
    PIDS+=("$demo")
    if ! wait_for 60 grep -q ready "$WORK/paxosstore-demo.out"; then
        note "paxosstore: the demo cluster did not print ready (see $WORK/paxosstore-demo.out); skipped"
        kill "$demo" 2>/dev/null
        return
    fi
    local pids
    mapfile -t pids < <(awk '/^node [0-9]+ pid/{print $4}' "$WORK/paxosstore-demo.out")
    PIDS+=("${pids[@]}")
    TARGET="resp://127.0.0.1:$PX_PORT,127.0.0.1:$((PX_PORT + 1)),127.0.0.1:$((PX_PORT + 2))"
    SYS_PIDS=("${pids[@]}")
    SYS_NAMES=()
    for i in "${!pids[@]}"; do SYS_NAMES+=("paxosstore node $i"); done
    suite
    for i in "${!pids[@]}"; do rss "paxosstore node $i" "${pids[$i]}" "after the workloads, before failover"; done
    failover "kill -9 ${pids[1]} && echo 'SIGKILL paxosstore node 1 (pid ${pids[1]})'"
    kill -TERM "$demo" 2>/dev/null
    wait "$demo" 2>/dev/null
}

# The CPU that storage alone spends per durable update, in the server's row shape and
# with several updates per submission as a shard worker sends them: the floor of a
# replica's share of a write (the report's CPU budget).
WB=${CARGO_TARGET_DIR:-target}/release/examples/write_bench
if [ -x "$WB" ]; then
    log "storage alone (write_bench)"
    "$WB" --dir "$WORK/storage-floor" --writers 8 --secs 4 --whole --keys "$KEYS" --per-submit 16 \
        >"$RES/storage_floor.txt" 2>&1 || note "storage alone: write_bench exited with status $?"
    rm -rf "$WORK/storage-floor"
fi

for s in $SYSTEMS; do
    case $s in
    redis) bench_redis ;;
    etcd) bench_etcd ;;
    paxosstore) bench_paxosstore ;;
    *) log "unknown system $s" ;;
    esac
done

# --- 5. plots and report -----------------------------------------------------
echo "Load average (1/5/15 min) when the run ended: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$RES/notes.txt"
if [ "$SCALE" != 1 ]; then
    note "scale scenario (preload 1 M and 10 M keys; RSS and throughput against key count) not run; run with SCALE=1 (SCALE_KEYS=\"1000000 10000000\")."
fi
"$BENCH" plot --results "$RES" >/dev/null || note "plots failed"
"$BENCH" report --results "$RES" --out "$OUT" --command "$CMD" --date "$DATE" --plots-href "$RES"
rm -rf "$WORK"
log "done: $OUT, $RES/"
