#!/usr/bin/env bash
# Build a FROM-scratch image around an already built (dynamically linked) server
# binary and the shared libraries it loads, so the container tier of the fault-test
# harness runs exactly the binary the process tier ran, with no second (static)
# build and no base image. Usage: tests/jepsen/build-image.sh [binary] [tag]
set -euo pipefail
bin="${1:-target/release/paxosstore}"
tag="${2:-paxosstore-jepsen:local}"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/paxosstore"
# Every absolute path ldd names (libc, libm, libgcc_s, the loader, ...).
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$ctx$(dirname "$lib")"
  cp -L "$lib" "$ctx$lib"
done
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENTRYPOINT ["/paxosstore"]
CMD ["server", "--config", "/etc/paxosstore/node.toml"]
DOCKERFILE
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built $tag from $bin"
