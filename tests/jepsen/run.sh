#!/usr/bin/env bash
# Fault-test tier (crates/jepsen): real clusters under a seeded nemesis, histories
# checked for per-entity linearizability, lost acknowledged writes and expiry.
#   processes:  3 nodes x JEPSEN_ROUNDS_3 rounds, 5 nodes x JEPSEN_ROUNDS_5 rounds
#   containers: the same, when a Docker engine is reachable (else a visible SKIP)
# Seeds are random unless JEPSEN_SEED is set; a failing run prints its directory
# (history.jsonl, faults.jsonl, node logs, configs) and the replay command. Exits
# non-zero on any violation, lost write or cluster that does not recover.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/paxosstore"
JEPSEN="$TARGET/release/paxosstore-jepsen"
R3="${JEPSEN_ROUNDS_3:-12}"
R5="${JEPSEN_ROUNDS_5:-10}"
D3="${JEPSEN_DOCKER_ROUNDS_3:-6}"
D5="${JEPSEN_DOCKER_ROUNDS_5:-4}"
OUT="${JEPSEN_OUT:-${TMPDIR:-/tmp}}"
seed() { echo "${JEPSEN_SEED:-$(( ($(date +%s%N) / 1000) % 1000000007 ))}"; }
[ -x "$BIN" ] && [ -x "$JEPSEN" ] || cargo build --release -p paxosstore --bin paxosstore -p jepsen

start=$(date +%s)
status=0
run() { "$JEPSEN" --out "$OUT" "$@" || status=1; }

run --nodes 3 --rounds "$R3" --seed "$(seed)" --bin "$BIN"
# Half the configurations run as the demo does on small machines: one IO thread
# (tokio's single-threaded scheduler) with the shards as tasks on it; the other half
# two IO threads and a thread per shard.
SMALL=(--server-config "shard_threads = false" --server-config "io_threads = 1")
run --nodes 5 --rounds "$R5" --seed "$(seed)" --bin "$BIN" "${SMALL[@]}"

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  tests/jepsen/build-image.sh "$BIN" paxosstore-jepsen:local
  run --docker --nodes 3 --rounds "$D3" --seed "$(seed)" --image paxosstore-jepsen:local "${SMALL[@]}"
  run --docker --nodes 5 --rounds "$D5" --seed "$(seed)" --image paxosstore-jepsen:local
else
  echo "SKIP: docker not available (fault tests on containers)"
fi

echo "fault-test tier: $(( $(date +%s) - start )) s"
exit $status
