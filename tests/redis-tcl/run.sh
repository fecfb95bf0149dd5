#!/usr/bin/env bash
# Redis 7.0's own Tcl test suite (Debian's redis sources) against one node of a local
# 3-node PaxosStore cluster. Runs the string, counter, transaction, keyspace and
# protocol test files; tests needing what PaxosStore does not have are listed, with
# the reason, in skip.txt next to this script.
#
# Builds nothing: expects the binary at $PAXOSSTORE_BIN (default
# target/release/paxosstore). Fetches the sources once with `apt-get source redis`
# into $REDIS_SRC_CACHE (default target/redis-src); later runs reuse them.
#
# Exit codes: 0 all run tests passed; 1 a test failed; 2 usage (no binary);
# 3 the Redis sources or tclsh could not be installed (the caller reports a skip).
# Needs curl (node readiness). Usage: tests/redis-tcl/run.sh [unit/type/string ...]   (default: all five files)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
BIN="${PAXOSSTORE_BIN:-$repo/target/release/paxosstore}"
CACHE="${REDIS_SRC_CACHE:-$repo/target/redis-src}"
if [ $# -gt 0 ]; then FILES=("$@"); else
  FILES=(unit/type/string unit/type/incr unit/multi unit/keyspace unit/protocol)
fi
if [ ! -x "$BIN" ]; then
  echo "run.sh: no paxosstore binary at $BIN (cargo build --release -p paxosstore)" >&2
  exit 2
fi

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# --- the Redis 7.0 sources (cached) -------------------------------------------------
fetch_sources() {
  if ! command -v tclsh >/dev/null || ! command -v dpkg-source >/dev/null; then
    $SUDO apt-get update -qq || return 1
    $SUDO apt-get install -y -qq dpkg-dev tcl >/dev/null || return 1
  fi
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ \
     && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $SUDO tee /etc/apt/sources.list.d/debsrc.sources >/dev/null || return 1
    $SUDO apt-get update -qq || return 1
  fi
  local work; work="$(mktemp -d)"
  (cd "$work" && apt-get source -qq redis >/dev/null 2>&1) || { rm -rf "$work"; return 1; }
  local dir; dir="$(find "$work" -maxdepth 1 -type d -name 'redis-7.0*' | head -n1)"
  [ -n "$dir" ] && [ -x "$dir/runtest" ] || { rm -rf "$work"; return 1; }
  mkdir -p "$(dirname "$CACHE")"
  rm -rf "$CACHE"
  mv "$dir" "$CACHE"
  rm -rf "$work"
}
if [ ! -x "$CACHE/runtest" ] || ! command -v tclsh >/dev/null; then
  echo "run.sh: fetching Redis 7.0 sources (apt-get source redis) into $CACHE"
  if ! fetch_sources; then
    echo "run.sh: could not install tcl/dpkg-dev or fetch the Redis sources" >&2
    exit 3
  fi
fi
# One harness patch: external mode runs `FUNCTION FLUSH` before each file; PaxosStore
# has no functions (Lua), so let that fail quietly. (Idempotent.)
sed -i 's/^\(\s*\)r function flush$/\1catch {r function flush}/' "$CACHE/tests/support/server.tcl"

# --- a 3-node cluster -------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
base=""
for _ in $(seq 50); do
  b=$(( 10000 + RANDOM % 2700 ))
  ok=1
  for off in 0 10000 20000; do for i in 0 1 2; do
    port_free $((b + off + i)) || ok=0
  done; done
  if [ $ok = 1 ]; then base=$b; break; fi
done
[ -n "$base" ] || { echo "run.sh: no free port range" >&2; exit 1; }
data="$(mktemp -d "${TMPDIR:-/tmp}/paxosstore-tcl-XXXXXX")"
# Three `paxosstore server` processes. op_timeout_ms is raised from 2 s: the suite
# writes 4 MB values, and a shared, loaded CI machine must not turn them into TIMEOUTs.
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$data"
}
trap cleanup EXIT
for i in 0 1 2; do
  {
    echo "id = $i"
    echo "client_addr = \"127.0.0.1:$((base + i))\""
    echo "peer_addr = \"127.0.0.1:$((base + 10000 + i))\""
    echo "admin_addr = \"127.0.0.1:$((base + 20000 + i))\""
    echo "data_dir = \"$data/node$i\""
    echo "op_timeout_ms = 10000"
    for j in 0 1 2; do
      printf '[[members]]\nid = %d\npeer = "127.0.0.1:%d"\n' "$j" $((base + 10000 + j))
    done
  } >"$data/node$i.toml"
  "$BIN" server --config "$data/node$i.toml" 2>"$data/node$i.log" &
  pids+=($!)
done
# Every node must answer and see both peers (else early writes may get CLUSTERDOWN).
for i in 0 1 2; do
  ups=0
  for _ in $(seq 300); do
    ups=$(curl -fsS "http://127.0.0.1:$((base + 20000 + i))/status.json" 2>/dev/null \
          | grep -o '"state":"up(' | wc -l || true)
    [ "$ups" = 2 ] && break
    sleep 0.1
  done
  if [ "$ups" != 2 ]; then
    echo "run.sh: node $i did not see its peers; its log:" >&2
    tail -20 "$data/node$i.log" >&2
    exit 1
  fi
done

# --- the tests --------------------------------------------------------------------------
skipfile="$data/skip.txt"
tags=""
while IFS= read -r line; do
  line="$(printf '%s' "$line" | sed 's/[[:space:]]*$//')"
  case "$line" in ''|'#'*) continue ;; esac
  case "$line" in
    tag:*) tags="$tags -${line#tag:}" ;;
    *) printf '%s\n' "$line" >>"$skipfile" ;;
  esac
done <"$here/skip.txt"
touch "$skipfile"

status=0
summary=""
for f in "${FILES[@]}"; do
  log="$data/$(echo "$f" | tr / _).log"
  echo "==> $f against 127.0.0.1:$base"
  set +e
  (cd "$CACHE" && timeout 600 tclsh tests/test_helper.tcl --host 127.0.0.1 --port "$base" \
      --cluster-mode --ignore-encoding --ignore-digest --durable --clients 1 --timeout 300 \
      --tags "$tags" --skipfile "$skipfile" --single "$f") 2>&1 \
    | sed -u 's/\x1b\[[0-9;]*m//g' | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  ok=$(grep -c '^\[ok\]:' "$log" || true)
  err=$(grep -c '^\[err\]:' "$log" || true)
  exc=$(grep -c '^\[exception\]:' "$log" || true)
  skip=$(grep -c '^\[skip\]:' "$log" || true)
  ign=$(grep -c '^\[ignore\]:' "$log" || true)
  summary="$summary$(printf '%-18s passed %3d  failed %3d  skipped %3d (skip.txt %d, tags %d)' \
    "$f" "$ok" "$((err + exc))" "$((skip + ign))" "$skip" "$ign")\n"
  if [ "$rc" -ne 0 ] || [ "$err" -ne 0 ] || [ "$exc" -ne 0 ] || [ "$ok" -eq 0 ]; then
    status=1
  fi
done
printf '\nRedis 7.0 Tcl suite against PaxosStore:\n%b' "$summary"
exit $status
