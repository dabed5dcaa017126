#!/usr/bin/env bash
# What compressing the local store's blobs (cache_compression) buys and costs: the store's
# size and the latency of hits, with it off and on, side by side in one run.
#
# Usage: bench/cache-compression.sh [--record] [--rounds N] [CORPUS...]
#        (default corpora: lua leveldb; LLAMA_CORPUS_CACHE as for scripts/corpus-fetch)
#
# The release binaries of this checkout (in ${CARGO_TARGET_DIR:-target}/release) run as
# llamacc twice over, each setting with its own store (LLAMA_CACHE_COMPRESSION=0 or 1):
#   store    each corpus is built once per setting into an empty store (all misses); then
#            the bytes the store accounts (what cache_size bounds: `llama cache --json`'s
#            size) and the disk it takes (`du`, 4 KiB blocks) are read.
#   warm     the corpus' clean target, then the build again: every compile a hit, each
#            writing its object afresh from the store. Rounds alternate the settings
#            (off, on, off, on, ...) so the machine's drift falls on both; the median is kept.
#   hits     100 hits in a row of one unit with debug info (lua's lparser.c at -O2 -g: the
#            largest object of the run), per setting, alternating, median of the rounds: the
#            per-hit cost of decompressing, with nothing else in the way.
# For reference, zstd's command line compresses the off-store's blobs at levels 1 and 3:
# what the level llama uses (1) gives up against zstd's default.
# Prints a markdown table of sizes, times and ratios (on / off); with --record appends it
# to bench/RESULTS.md with the date and machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 rounds=5 corpora=()
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --rounds) rounds=$2; shift ;;
    -*) echo "bench/cache-compression.sh: unknown flag $1 (see the header of this script)" >&2; exit 2 ;;
    *) corpora+=("$1") ;;
  esac
  shift
done
[ ${#corpora[@]} -gt 0 ] || corpora=(lua leveldb)

scripts/corpus-fetch $(printf '%s\n' "${corpora[@]}" lua | sort -u) >/dev/null
cargo build --release --locked -p llama-cli --bins
bin=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d /tmp/llama-compression.XXXXXX)
mkdir -p "$work/bin"
ln -s "$bin/llamacc" "$work/bin/llamacc"
ln -s "$bin/llamacxx" "$work/bin/llamacxx"
settings=(off on)
declare -A flag=([off]=0 [on]=1)
stop_daemons() {
  for s in "${settings[@]}"; do
    LLAMA_DIR=$work/$s.store "$bin/llama" daemon stop >/dev/null 2>&1 || true
  done
}
trap 'stop_daemons; rm -rf "$work"' EXIT
export LLAMACC_LOCAL_CC=gcc LLAMACC_LOCAL_CXX=g++ LLAMA_DAEMON_IDLE_TIMEOUT=30m
export XDG_CONFIG_HOME=$work/config # no user config file
with() { # setting command...: runs the command against that setting's store
  local s=$1; shift
  LLAMA_DIR=$work/$s.store LLAMA_CACHE_COMPRESSION=${flag[$s]} "$@"
}
now() { date +%s.%N; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
entries_kib() { # store: KiB on disk of its entries
  du -sk "$1"/cas "$1"/cas-z "$1"/ac "$1"/manifests 2>/dev/null | awk '{s+=$1} END {print s}'
}

results=$work/results.tsv
: > "$results"
for corpus in "${corpora[@]}"; do
  # One path for every setting and round (each setting's tree is moved there to build):
  # the same compiles, the same keys.
  tree=$work/tree
  for s in "${settings[@]}"; do
    rm -rf "$tree"
    scripts/corpus-tree "$corpus" "$tree" >/dev/null
    with "$s" scripts/corpus-build "$corpus" "$tree" "$work/bin/llamacc" "$work/bin/llamacxx" 2 \
      > "$work/$corpus-$s-cold.log" 2>&1
    size=$(with "$s" "$bin/llama" cache --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
    misses=$(with "$s" "$bin/llama" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"].get("misses",0))')
    printf '%s\tstore\t%s\t%s\t%s\t%s\n' "$corpus" "$s" "$size" "$(entries_kib "$work/$s.store")" "$misses" >> "$results"
    mv "$tree" "$work/$corpus-$s.tree"
  done
  for round in $(seq "$rounds"); do
    for s in "${settings[@]}"; do
      mv "$work/$corpus-$s.tree" "$tree"
      scripts/corpus-build "$corpus" "$tree" --clean >/dev/null 2>&1
      with "$s" "$bin/llama" stats --zero >/dev/null
      start=$(now)
      with "$s" scripts/corpus-build "$corpus" "$tree" "$work/bin/llamacc" "$work/bin/llamacxx" 2 \
        > "$work/$corpus-$s-warm.log" 2>&1
      end=$(now)
      mv "$tree" "$work/$corpus-$s.tree"
      hits=$(with "$s" "$bin/llama" stats --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["counters"]; print(c.get("hits",0), c.get("misses",0))')
      printf '%s\twarm\t%s\t%s\t%s\n' "$corpus" "$s" "$(echo "$end - $start" | bc -l)" "$hits" >> "$results"
      echo "bench: $corpus round $round $s warm $(echo "$end - $start" | bc -l) s (hits misses: $hits)" >&2
    done
  done
  rm -rf "$work/$corpus-off.tree" "$work/$corpus-on.tree"
done

# 100 hits of one large object, per setting.
unit=$work/unit
rm -rf "$unit" && scripts/corpus-tree lua "$unit" >/dev/null
cd "$unit/src"
for s in "${settings[@]}"; do
  with "$s" "$work/bin/llamacc" -O2 -g -c lparser.c -o lparser.o
done
object_kib=$(( $(stat -c %s lparser.o) / 1024 ))
for round in $(seq "$rounds"); do
  for s in "${settings[@]}"; do
    start=$(now)
    for _ in $(seq 100); do with "$s" "$work/bin/llamacc" -O2 -g -c lparser.c -o lparser.o; done
    end=$(now)
    printf 'lparser\thit\t%s\t%s\n' "$s" "$(echo "($end - $start) * 10" | bc -l)" >> "$results"
  done
done
cd "$root"

# zstd's command line on the off-store's blobs, for the level.
levels=""
if command -v zstd >/dev/null; then
  raw=$(find "$work/off.store/cas" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  for level in 1 3; do
    z=$(find "$work/off.store/cas" -type f -exec sh -c 'for f; do zstd -q -'"$level"' -c "$f" | wc -c; done' _ {} + | awk '{s+=$1} END {print s+0}')
    levels="$levels zstd -$level: $(python3 -c "print(f'{$raw/$z:.2f}')")x;"
  done
fi

table=$(python3 - "$results" "$object_kib" "$levels" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
store = {(r[0], r[2]): (int(r[3]), int(r[4]), int(r[5])) for r in rows if r[1] == "store"}
warm, hit = {}, {}
for r in rows:
    if r[1] == "warm":
        warm.setdefault((r[0], r[2]), []).append(float(r[3]))
    if r[1] == "hit":
        hit.setdefault(r[2], []).append(float(r[3]))
med = lambda v: statistics.median(v)
print("| corpus | cold misses | store off (accounted / on disk) | store on | size on/off | disk on/off | warm build off s | on s | time on/off |")
print("|---|---|---|---|---|---|---|---|---|")
for corpus in dict.fromkeys(k[0] for k in store):
    off, on = store[(corpus, "off")], store[(corpus, "on")]
    w_off, w_on = med(warm[(corpus, "off")]), med(warm[(corpus, "on")])
    print(f"| {corpus} | {off[2]} | {off[0]/1024:.0f} KiB / {off[1]} KiB | {on[0]/1024:.0f} KiB / {on[1]} KiB "
          f"| {on[0]/off[0]:.3f} | {on[1]/off[1]:.3f} | {w_off:.2f} | {w_on:.2f} | {w_on/w_off:.3f} |")
print()
h_off, h_on = med(hit["off"]), med(hit["on"])
print(f"| 100 hits of lparser.c -O2 -g ({sys.argv[2]} KiB object), per hit | off ms | on ms | on/off |")
print("|---|---|---|---|")
print(f"| median of rounds | {h_off:.2f} | {h_on:.2f} | {h_on/h_off:.3f} |")
if sys.argv[3].strip():
    print()
    print(f"zstd's command line on the off-store's blobs (size raw/compressed):{sys.argv[3]}")
PY
)
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## Compressed store (cache_compression) — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/cache-compression.sh --record --rounds $rounds ${corpora[*]}\` (gcc $(gcc -dumpfullversion), -j2)."
    echo "Store: after one build into an empty store per setting; accounted = what cache_size bounds."
    echo "Warm: the corpus' clean target, then the build again, all hits; median of $rounds rounds alternating the settings."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
