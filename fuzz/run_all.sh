#!/usr/bin/env bash
# Fuzz every target for SECS seconds each (default 600), one at a time, at nice 19,
# on scratch copies of the corpora. Needs the nightly toolchain (libFuzzer via
# sancov; cargo-fuzz is not required). Crashes land in $OUT/<target>-crash-*.
#
#   fuzz/run_all.sh            # 10 minutes per target
#   SECS=60 fuzz/run_all.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-600}
OUT=${OUT:-/tmp/paxosstore-fuzz}
mkdir -p "$OUT"
FL="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
build() { # build DIR
    (cd "$1" && RUSTFLAGS="$FL" nice -n 19 cargo +nightly build --release \
        --target x86_64-unknown-linux-gnu --target-dir target) >"$OUT/build.log" 2>&1 ||
        { echo "build failed in $1 (see $OUT/build.log)"; exit 1; }
}
run() { # run DIR TARGET
    local dir=$1 t=$2
    rm -rf "$OUT/corpus-$t" && mkdir -p "$OUT/corpus-$t"
    cp "$dir/corpus/$t/"* "$OUT/corpus-$t/" 2>/dev/null
    echo "== $t ($SECS s)"
    if nice -n 19 "$dir/target/x86_64-unknown-linux-gnu/release/$t" "$OUT/corpus-$t" \
        -max_total_time="$SECS" -artifact_prefix="$OUT/$t-" >"$OUT/$t.log" 2>&1; then
        grep -E '^Done' "$OUT/$t.log"
    else
        echo "FAILED: $t (log $OUT/$t.log, artifacts $OUT/$t-*)"
        status=1
    fi
}
status=0
build "$ROOT/fuzz"
build "$ROOT/crates/net/fuzz"
for t in row_decode resp_parse record_decode message_decode batch_decode kv_decode; do run "$ROOT/fuzz" "$t"; done
for t in frame_decode handshake_decode; do run "$ROOT/crates/net/fuzz" "$t"; done
exit $status
