# Sourced by bench/cpu_per_op.sh and bench/rss_after_preload.sh: a fresh local
# 3-node cluster started from the configs `paxosstore demo` writes, with overrides.
#
# Needs: BIN (server binary), PORT (client port of node 0), OVR ("key = value"
# settings separated by ';', replacing the demo's), W (an empty work directory).
# Sets: pids (the three server processes), TARGET (a paxosstore-bench target).
# Provides: cluster_cpu (the servers' CPU time so far).
# Stops the servers and removes W on exit (KEEP=1: keeps W, with the nodes' logs).

pids=()
cleanup() {
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# The three servers' CPU time so far (user + system), in 1/100 s, from /proc.
cluster_cpu() {
    local t=0 p
    for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}

start_local_cluster() {
    # A port already answering would be a stray server from an earlier run: the
    # readiness check below would then measure it instead of the new cluster.
    local p
    for p in "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 10000)) $((PORT + 10001)) \
        $((PORT + 10002)) $((PORT + 20000)) $((PORT + 20001)) $((PORT + 20002)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "port $p is in use (a server left from an earlier run?); set PORT to another base" >&2
            return 1
        fi
    done
    cp "$BIN" "$W/bin"
    # The demo writes node<i>.toml and starts; stop it and start the nodes ourselves.
    timeout 2 "$W/bin" demo --nodes 3 --port "$PORT" --data-dir "$W/d" >/dev/null 2>&1 || true
    rm -rf "$W/d/node0" "$W/d/node1" "$W/d/node2"
    local i o k n
    IFS=';' read -ra OV <<< "${OVR:-}"
    for i in 0 1 2; do
        for o in "${OV[@]}"; do
            k=$(echo "${o%%=*}" | xargs)
            sed -i "s|^$k = .*|$o|" "$W/d/node$i.toml"
        done
        "$W/bin" server --config "$W/d/node$i.toml" >"$W/node$i.log" 2>&1 &
        pids+=($!)
    done
    TARGET="resp://127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
    # Wait until every client port answers and node 0 sees both peers (its admin
    # port's /status.json).
    for _ in $(seq 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null &&
            (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + 1))") 2>/dev/null &&
            (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + 2))") 2>/dev/null && break
        sleep 0.2
    done
    for _ in $(seq 150); do
        n=$(curl -s "127.0.0.1:$((PORT + 20000))/status.json" | grep -o '"up(' | wc -l || true)
        [ "$n" -ge 2 ] && return 0
        sleep 0.2
    done
    echo "the local cluster did not connect (logs in $W)" >&2
    return 1
}
