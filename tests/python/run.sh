#!/usr/bin/env bash
# Run the Python (redis-py) tests against a local 3-node PaxosStore cluster.
# Builds nothing: expects the binary at $PAXOSSTORE_BIN (default
# target/release/paxosstore; build it with `cargo build --release -p paxosstore`).
# Needs redis-server on PATH for the differential tests (they skip without it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export PAXOSSTORE_BIN="${PAXOSSTORE_BIN:-$repo/target/release/paxosstore}"
if [ ! -x "$PAXOSSTORE_BIN" ]; then
    echo "run.sh: no paxosstore binary at $PAXOSSTORE_BIN (cargo build --release -p paxosstore)" >&2
    exit 2
fi
python3 -m pip install -q -r "$here/requirements.txt"
cd "$here"
exec python3 -m pytest -q -p no:cacheprovider "$@"
