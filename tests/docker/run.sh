#!/usr/bin/env bash
# Container tier: the FROM-scratch image in a 3-node docker-compose cluster.
# Kill -9 of a container and a network partition (docker network disconnect) while
# clients keep writing; the victim catches up after it comes back.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  echo "SKIPPED: container tier (no Docker engine reachable)"; exit 0
fi
DC="docker compose"; docker compose version >/dev/null 2>&1 || DC="docker-compose"
project="pstest$$"
cleanup() { $DC -p "$project" down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT

deploy/build-image.sh >/dev/null
$DC -p "$project" up -d >/dev/null 2>&1

# Poll a command until it prints the expected text (pacing, not synchronisation).
expect() { # expect <seconds> <expected> <command...>
  local secs=$1 want=$2; shift 2
  local deadline=$(( $(date +%s) + secs )) got=""
  while [ "$(date +%s)" -le "$deadline" ]; do
    got="$("$@" 2>/dev/null || true)"
    [ "$got" = "$want" ] && return 0
    sleep 0.2
  done
  echo "FAILED: '$*' gave '$got', expected '$want'"; $DC -p "$project" logs --tail 20; exit 1
}
health() { curl -s -o /dev/null -w '%{http_code}' "localhost:$1/health"; }

for p in 27379 27380 27381; do expect 60 200 health "$p"; done
expect 10 OK redis-cli -p 7379 SET ck v0
expect 10 v0 redis-cli -p 7381 GET ck
echo "containers: replication ok"

$DC -p "$project" kill -s SIGKILL node0 >/dev/null 2>&1
for i in 1 2 3 4 5; do expect 10 OK redis-cli -p 7380 SET "ck$i" "v$i"; done
expect 10 v5 redis-cli -p 7381 GET ck5
$DC -p "$project" start node0 >/dev/null 2>&1
expect 60 v3 redis-cli -p 7379 GET ck3
echo "containers: kill -9 and restart ok"

net="${project}_paxos"
docker network disconnect "$net" "${project}_node2_1" >/dev/null 2>&1 || docker network disconnect "$net" "${project}-node2-1"
expect 10 OK redis-cli -p 7379 SET pk during-partition
expect 10 during-partition redis-cli -p 7380 GET pk
docker network connect --ip 172.28.0.12 "$net" "${project}_node2_1" >/dev/null 2>&1 || docker network connect --ip 172.28.0.12 "$net" "${project}-node2-1"
expect 60 during-partition redis-cli -p 7381 GET pk
echo "containers: partition and heal ok"
