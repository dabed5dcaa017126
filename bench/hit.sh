#!/usr/bin/env bash
# The latency of one cache hit: llamacc builds side by side with ccache, in one run.
#
# Usage: bench/hit.sh [--record] [--rounds N] [LABEL=DIR ...]
#
# Each LABEL=DIR names a directory holding a `llama` and a `llamacc` (e.g. the release
# binaries of an older commit, to compare before and after a change); without any, the
# release binaries of this checkout are built and used as `llamacc`.
#
# Two units, each compiled at -O2 by every tool:
#   one-line  a C file of one line: no headers, so the hit is all fixed cost;
#   headers   a C++ file including nine standard headers (~460 files read, as a real
#             unit of a C++ project does): the hit must show all of them unchanged.
# Each tool first compiles the unit to out/1.o … out/100.o (filling its cache). Then the
# rounds run: in each, for every unit and every tool in turn, out/ is emptied (untimed, as
# `make clean` does) and the 100 compiles run again, all hits, each writing a fresh object.
# Interleaving the tools round by round spreads the machine's drift over all of them; the
# median round is reported per tool, in ms per compile and as a ratio to ccache.
# Also shown: the floor (the shell starting /bin/true, 100 times: what any tool run per
# compile pays before doing anything) and, per llamacc, its binary's size and its start-up
# alone (LLAMACC_LOCAL=1 with /bin/true as the compiler: two programs started).
# With --record the table is appended to bench/RESULTS.md with the date and machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 rounds=11 builds=()
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --rounds) rounds=$2; shift ;;
    -*) echo "bench/hit.sh: unknown flag $1 (see the header of this script)" >&2; exit 2 ;;
    *=*) builds+=("$1") ;;
    *) echo "bench/hit.sh: $1 is not LABEL=DIR (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#builds[@]} -eq 0 ]; then
  cargo build --release --locked -p llama-cli --bins
  builds=("llamacc=${CARGO_TARGET_DIR:-$root/target}/release")
fi
command -v ccache >/dev/null || { echo "bench/hit.sh: ccache missing (scripts/install-peers)" >&2; exit 1; }
for b in "${builds[@]}"; do
  dir=${b#*=}
  [ -x "$dir/llamacc" ] && [ -x "$dir/llama" ] \
    || { echo "bench/hit.sh: $dir has no llama and llamacc binaries" >&2; exit 1; }
done

work=$(mktemp -d /tmp/llama-hit.XXXXXX)
stop_daemons() {
  for b in "${builds[@]}"; do
    LLAMA_DIR=$work/${b%%=*}.store "${b#*=}/llama" daemon stop >/dev/null 2>&1 || true
  done
}
trap 'stop_daemons; rm -rf "$work"' EXIT
export CCACHE_DIR=$work/ccache LLAMACC_LOCAL_CC=gcc LLAMACC_LOCAL_CXX=g++ LLAMA_DAEMON_IDLE_TIMEOUT=30m
echo 'int one(void) { return 1; }' > "$work/one.c"
{
  for h in algorithm functional iostream map memory regex string unordered_map vector; do
    echo "#include <$h>"
  done
  echo 'int first() { std::vector<int> v{3, 1, 2}; std::sort(v.begin(), v.end()); return v[0]; }'
} > "$work/headers.cc"
cd "$work"
units=(one-line headers)
declare -A source=([one-line]=one.c [headers]=headers.cc)

# tool → the command that compiles C with it (C++ adds the driver's ++)
labels=(ccache)
declare -A cc=([ccache]="ccache gcc") cxx=([ccache]="ccache g++")
for b in "${builds[@]}"; do
  label=${b%%=*} dir=${b#*=}
  labels+=("$label")
  mkdir -p "$work/$label.bin"
  ln -s "$dir/llamacc" "$work/$label.bin/llamacc"
  ln -s "$dir/llamacc" "$work/$label.bin/llamac++"
  cc[$label]="$work/$label.bin/llamacc"
  cxx[$label]="$work/$label.bin/llamac++"
done
use() { # tool unit: sets $tool to the command that compiles the unit with it
  if [ "$2" = headers ]; then tool=${cxx[$1]}; else tool=${cc[$1]}; fi
  # Each llamacc its own store, set here rather than through env(1), which would add a
  # program's start to every compile.
  export LLAMA_DIR=$work/$1.store
}

hundred() { # command source → ms per compile over 100 compiles, each to a fresh object
  local start end
  rm -rf out && mkdir out
  start=$(date +%s%N)
  for i in $(seq 100); do $1 -O2 -c "$2" -o "out/$i.o"; done
  end=$(date +%s%N)
  printf %.3f "$(echo "scale=4; ($end - $start) / 100000000" | bc -l)"
}

for unit in "${units[@]}"; do
  for label in "${labels[@]}"; do
    use "$label" "$unit"
    hundred "$tool" "${source[$unit]}" >/dev/null
  done
done
declare -A samples
for round in $(seq "$rounds"); do
  for unit in "${units[@]}"; do
    for label in "${labels[@]}"; do
      use "$label" "$unit"
      samples[$unit.$label]+="$(hundred "$tool" "${source[$unit]}") "
    done
  done
  echo "bench/hit.sh: round $round of $rounds" >&2
done
floor=$(hundred /bin/true one.c)
declare -A startup size
for b in "${builds[@]}"; do
  label=${b%%=*}
  use "$label" one-line
  startup[$label]=$(LLAMACC_LOCAL=1 LLAMACC_LOCAL_CC=/bin/true hundred "$tool" one.c)
  size[$label]=$(stat -c %s "${b#*=}/llamacc")
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
table="| unit | tool | hit, ms per compile (median of $rounds rounds of 100) | × ccache | llamacc binary | start-up alone, ms |
|---|---|---|---|---|---|"
for unit in "${units[@]}"; do
  base=$(echo "${samples[$unit.ccache]}" | median)
  for label in "${labels[@]}"; do
    ms=$(echo "${samples[$unit.$label]}" | median)
    ratio=$(printf %.3f "$(echo "scale=4; $ms / $base" | bc -l)")
    if [ "$label" = ccache ]; then
      table+=$'\n'"| $unit | ccache | $ms | 1.000 | | |"
    else
      mb=$(echo "scale=1; ${size[$label]} / 1048576" | bc -l)
      table+=$'\n'"| $unit | $label | $ms | $ratio | $mb MB | ${startup[$label]} |"
    fi
  done
done
floor_ratio=$(printf %.3f "$(echo "scale=4; $floor / $(echo "${samples[one-line.ccache]}" | median)" | bc -l)")
table+=$'\n'"| floor | /bin/true | $floor | $floor_ratio of one-line | | |"
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## Cache-hit latency, llamacc vs ccache — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/hit.sh --record --rounds $rounds ${builds[*]}\` ($(ccache --version | head -1), gcc $(gcc -dumpfullversion))."
    echo "Units: a one-line C file and a C++ file including nine standard headers, at -O2; every"
    echo "compile a hit writing a fresh object; tools interleaved round by round."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
