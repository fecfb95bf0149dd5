#!/usr/bin/env bash
# Build the `paxosstore:local` image: a static binary (glibc, crt-static) in a
# FROM-scratch image. Usage: deploy/build-image.sh [tag]
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-paxosstore:local}"
target_dir="${CARGO_TARGET_DIR:-target}"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --target x86_64-unknown-linux-gnu -p paxosstore --bin paxosstore
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$target_dir/x86_64-unknown-linux-gnu/release/paxosstore" "$ctx/paxosstore"
cp Dockerfile "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx"
echo "built $tag"
