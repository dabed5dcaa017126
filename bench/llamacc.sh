#!/usr/bin/env bash
# llamacc against plain gcc, ccache and sccache, side by side in one run, on real projects
# (CORPORA.md) and on one-line compiles.
#
# Usage: bench/llamacc.sh [--record] [--jobs N] [CORPUS...]   (default corpora: lua leveldb git)
#
# For each corpus and tool, at one fixed path:
#   cold  = a full build with the tool's cache emptied first (gcc: just the build);
#   warm  = `make clean` (the corpus' own clean target), then the build again.
# Then 100 compiles of a one-line C file at -O2 per tool, timed together: for the caches
# these are all hits (one compile first fills the cache), for gcc they are compiles.
# Prints a markdown table of wall times and ratios to gcc; with --record, appends it to
# bench/RESULTS.md with the date and machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 jobs=2 corpora=()
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --jobs) jobs=$2; shift ;;
    -*) echo "bench/llamacc.sh: unknown flag $1 (see the header of this script)" >&2; exit 2 ;;
    *) corpora+=("$1") ;;
  esac
  shift
done
[ ${#corpora[@]} -gt 0 ] || corpora=(lua leveldb git)

scripts/install-peers >/dev/null
scripts/corpus-fetch "${corpora[@]}" >/dev/null
cargo build --release --locked -p llama-cli --bins
bin=$root/target/release
ln -sf llamacc "$bin/llamac++"
tools=${LLAMA_TOOLS:-$root/bench/tools}
sccache=$tools/bin/sccache
[ -x "$sccache" ] || { echo "bench/llamacc.sh: $sccache missing (scripts/install-peers)" >&2; exit 1; }

out=$root/bench/out/llamacc
rm -rf "$out" && mkdir -p "$out"
work=/tmp/llama-bench
mkdir -p "$work"
export CCACHE_DIR=$out/ccache SCCACHE_DIR=$out/sccache LLAMA_DIR=$out/llama
export LLAMACC_LOCAL_CC=gcc LLAMACC_LOCAL_CXX=g++
export LLAMA_DAEMON_IDLE_TIMEOUT=30m
trap '"$bin/llama" daemon stop >/dev/null 2>&1 || true; "$sccache" --stop-server >/dev/null 2>&1 || true' EXIT

# tool → (CC, CXX, how to empty its cache)
cc_of() { case $1 in gcc) echo gcc ;; llamacc) echo "$bin/llamacc" ;; ccache) echo "ccache gcc" ;; sccache) echo "$sccache gcc" ;; esac; }
cxx_of() { case $1 in gcc) echo g++ ;; llamacc) echo "$bin/llamac++" ;; ccache) echo "ccache g++" ;; sccache) echo "$sccache g++" ;; esac; }
empty_cache() {
  case $1 in
    gcc) ;;
    llamacc) "$bin/llama" daemon stop >/dev/null 2>&1 || true; rm -rf "$LLAMA_DIR" ;;
    ccache) rm -rf "$CCACHE_DIR" ;;
    sccache) "$sccache" --stop-server >/dev/null 2>&1 || true; rm -rf "$SCCACHE_DIR"; "$sccache" --start-server >/dev/null ;;
  esac
}
seconds() { # the wall time corpus-build prints last
  sed -n 's/^corpus-build: .* built in \([0-9.]*\) s.*/\1/p' "$1" | tail -1
}

results=$out/results.tsv
: > "$results"
for corpus in "${corpora[@]}"; do
  for tool in gcc llamacc ccache sccache; do
    tree=$work/$corpus
    rm -rf "$tree"
    scripts/corpus-tree "$corpus" "$tree" >/dev/null
    empty_cache "$tool"
    scripts/corpus-build "$corpus" "$tree" "$(cc_of $tool)" "$(cxx_of $tool)" "$jobs" > "$out/$corpus-$tool-cold.log" 2>&1
    cold=$(seconds "$out/$corpus-$tool-cold.log")
    scripts/corpus-build "$corpus" "$tree" --clean >/dev/null 2>&1
    scripts/corpus-build "$corpus" "$tree" "$(cc_of $tool)" "$(cxx_of $tool)" "$jobs" > "$out/$corpus-$tool-warm.log" 2>&1
    warm=$(seconds "$out/$corpus-$tool-warm.log")
    printf '%s\t%s\t%s\t%s\n' "$corpus" "$tool" "$cold" "$warm" >> "$results"
    echo "bench: $corpus $tool cold ${cold}s warm ${warm}s" >&2
  done
  rm -rf "$work/$corpus"
done

# 100 compiles of a one-line file.
one=$work/one
rm -rf "$one" && mkdir -p "$one"
echo 'int one(void) { return 1; }' > "$one/one.c"
cd "$one"
for tool in gcc llamacc ccache sccache; do
  read -r -a cmd <<< "$(cc_of $tool)"
  "${cmd[@]}" -O2 -c one.c -o one.o
  start=$(date +%s.%N)
  for _ in $(seq 100); do "${cmd[@]}" -O2 -c one.c -o one.o; done
  end=$(date +%s.%N)
  printf 'one-line\t%s\t%s\t\n' "$tool" "$(echo "($end - $start) * 10" | bc -l)" >> "$results"
done
cd "$root"

table=$(python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
builds = [r for r in rows if r[0] != "one-line"]
ones = {r[1]: float(r[2]) for r in rows if r[0] == "one-line"}
print("| corpus | tool | cold s | × gcc | warm s (after make clean) | × gcc cold |")
print("|---|---|---|---|---|---|")
base = {}
for corpus, tool, cold, warm in builds:
    if tool == "gcc":
        base[corpus] = float(cold)
for corpus, tool, cold, warm in builds:
    b = base[corpus]
    print(f"| {corpus} | {tool} | {float(cold):.2f} | {float(cold)/b:.2f} | {float(warm):.2f} | {float(warm)/b:.3f} |")
print()
print("| one-line C file, -O2, per compile | ms | × gcc |")
print("|---|---|---|")
for tool, ms in ones.items():
    print(f"| {tool} | {ms:.2f} | {ms/ones['gcc']:.3f} |")
PY
)
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## llamacc vs gcc, ccache, sccache — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/llamacc.sh --record --jobs $jobs ${corpora[*]}\` (one run each; gcc $(gcc -dumpfullversion),"
    echo "$(ccache --version | head -1), $("$sccache" --version)). Cold: empty cache; warm: the corpus' make clean, then build."
    echo "One-line: 100 compiles of a one-line C file at -O2, all cache hits for the caching tools."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
