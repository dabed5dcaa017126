#!/usr/bin/env bash
# What compressing the local store with zstd would buy and cost, measured on real stores.
#
# Usage: bench/cache-compression.sh [--record] [CORPUS...]   (default: lua git)
#
# Builds each corpus through llamacc (release binaries) into a store of its own, then, over
# every blob of that store (objects, depfiles, logs, manifests' blobs, stdout/stderr):
#   - its size, and its size compressed blob by blob with zstd -1 and -3 (what a store that
#     compresses each blob on write would hold);
#   - the time to decompress all of them (one zstd -d over their frames, from the page
#     cache, its start-up taken off), per hit: the total divided by the build's compiles,
#     an upper bound on what a hit would pay (a hit decompresses its own object and
#     depfile, not the toolchain's or the logs' blobs);
# and prints them beside the hit latency bench/hit.sh measures (1.6 to 2.0 ms per hit).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 corpora=()
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    -*) echo "bench/cache-compression.sh: unknown flag $1" >&2; exit 2 ;;
    *) corpora+=("$1") ;;
  esac
  shift
done
[ ${#corpora[@]} -gt 0 ] || corpora=(lua git)
command -v zstd >/dev/null || { echo "bench/cache-compression.sh: zstd missing (apt-get install zstd)" >&2; exit 1; }

cargo build --release --locked -p llama-cli --bins >&2
export PATH=${CARGO_TARGET_DIR:-$root/target}/release:$PATH LLAMACC_LOCAL_CC=gcc LLAMACC_LOCAL_CXX=g++
scripts/corpus-fetch "${corpora[@]}" >&2
work=$(mktemp -d /tmp/llama-zstd.XXXXXX)
trap 'LLAMA_DIR=$work/store llama daemon stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

table="| corpus | compiles | blobs | store (MB) | zstd -1 (MB) | × | zstd -3 (MB) | × | decompress, ms per hit (-3) |
|---|---|---|---|---|---|---|---|---|"
for corpus in "${corpora[@]}"; do
  export LLAMA_DIR=$work/store
  rm -rf "$LLAMA_DIR" "$work/$corpus" "$work/z"
  scripts/corpus-tree "$corpus" "$work/$corpus" >/dev/null
  scripts/corpus-build "$corpus" "$work/$corpus" llamacc llamacxx >/dev/null 2>&1
  compiles=$(llama stats --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["counters"]; print(c.get("misses",0)+c.get("hits",0))')
  llama daemon stop >/dev/null
  mkdir -p "$work/z"
  n=0 raw=0 z1=0 z3=0
  for blob in "$LLAMA_DIR"/cas/*/*; do
    n=$((n + 1))
    raw=$((raw + $(stat -c %s "$blob")))
    z1=$((z1 + $(zstd -q -1 -c "$blob" | wc -c)))
    zstd -q -3 -c "$blob" > "$work/z/$n.zst"
    z3=$((z3 + $(stat -c %s "$work/z/$n.zst")))
  done
  # Frames concatenate: one zstd process decompresses them all, blob by blob, so process
  # start-up (which a store decompressing in-process would not pay) is counted once and
  # taken off with an empty frame's run. Best of three.
  cat "$work"/z/*.zst > "$work/all.zst"
  printf '' | zstd -q -c > "$work/empty.zst"
  best=
  for _ in 1 2 3; do
    start=$(date +%s%N)
    zstd -q -d -c "$work/all.zst" > /dev/null
    mid=$(date +%s%N)
    zstd -q -d -c "$work/empty.zst" > /dev/null
    end=$(date +%s%N)
    ns=$(( (mid - start) - (end - mid) ))
    if [ -z "$best" ] || [ "$ns" -lt "$best" ]; then best=$ns; fi
  done
  decompress_ns=$best
  row=$(python3 -c "
raw, z1, z3, ns, compiles = $raw, $z1, $z3, $decompress_ns, max($compiles, 1)
mb = lambda b: b / 1e6
print(f'| $corpus | {compiles} | $n | {mb(raw):.1f} | {mb(z1):.1f} | {raw / z1:.2f} | {mb(z3):.1f} | {raw / z3:.2f} | {max(ns, 0) / 1e6 / compiles:.3f} |')")
  table+="
$row"
done
echo "$table"
if [ $record = 1 ]; then
  {
    echo
    echo "## Compressing the local store with zstd — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/cache-compression.sh ${corpora[*]}\` (zstd $(zstd --version | sed 's/.*v\([0-9.]*\).*/\1/'))."
    echo
    echo "$table"
  } >> bench/RESULTS.md
fi
