#!/usr/bin/env bash
# The latency of one cache hit: llamacc builds side by side with ccache, in one run.
#
# Usage: bench/hit.sh [--record] [--rounds N] [LABEL=DIR ...]
#
# Each LABEL=DIR names a directory holding a `llama` and a `llamacc` (e.g. the release
# binaries of an older commit, to compare before and after a change); without any, the
# release binaries of this checkout are built and used as `llamacc`.
# Every tool compiles a one-line C file at -O2 once (filling its cache), then the rounds
# run: in each, every tool in turn does 100 compiles of it, all hits. Interleaving the tools
# round by round spreads the machine's drift over all of them; the median round is reported
# per tool, in ms per compile and as a ratio to ccache. Also shown per llamacc: the binary's
# size, and its start-up alone (100 runs with LLAMACC_LOCAL=1 and /bin/true as the
# compiler: the cost of starting llamacc before any daemon is asked).
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
export CCACHE_DIR=$work/ccache LLAMACC_LOCAL_CC=gcc LLAMA_DAEMON_IDLE_TIMEOUT=30m
echo 'int one(void) { return 1; }' > "$work/one.c"
cd "$work"

# tool → the command that compiles with it
labels=(ccache)
declare -A cmd=([ccache]="ccache gcc")
for b in "${builds[@]}"; do
  label=${b%%=*}
  labels+=("$label")
  cmd[$label]="env LLAMA_DIR=$work/$label.store ${b#*=}/llamacc"
done

hundred() { # prints ms per compile over 100 compiles
  local start end
  start=$(date +%s%N)
  for _ in $(seq 100); do $1 -O2 -c one.c -o one.o; done
  end=$(date +%s%N)
  echo "scale=3; ($end - $start) / 100000000" | bc -l
}

for label in "${labels[@]}"; do ${cmd[$label]} -O2 -c one.c -o one.o; done
declare -A samples
for round in $(seq "$rounds"); do
  for label in "${labels[@]}"; do
    samples[$label]+="$(hundred "${cmd[$label]}") "
  done
  echo "bench/hit.sh: round $round of $rounds" >&2
done
declare -A startup size
for b in "${builds[@]}"; do
  label=${b%%=*}
  startup[$label]=$(LLAMACC_LOCAL=1 LLAMACC_LOCAL_CC=/bin/true hundred "${b#*=}/llamacc")
  size[$label]=$(stat -c %s "${b#*=}/llamacc")
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${samples[ccache]}" | median)
table="| tool | hit, ms per compile (median of $rounds rounds of 100) | × ccache | llamacc binary | start-up alone, ms |
|---|---|---|---|---|"
for label in "${labels[@]}"; do
  ms=$(echo "${samples[$label]}" | median)
  ratio=$(echo "scale=3; $ms / $base" | bc -l)
  if [ "$label" = ccache ]; then
    table+=$'\n'"| ccache | $ms | 1.000 | | |"
  else
    mb=$(echo "scale=1; ${size[$label]} / 1048576" | bc -l)
    table+=$'\n'"| $label | $ms | $ratio | $mb MB | ${startup[$label]} |"
  fi
done
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## Cache-hit latency, llamacc vs ccache — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/hit.sh --record --rounds $rounds ${builds[*]}\` ($(ccache --version | head -1), gcc $(gcc -dumpfullversion))."
    echo "A one-line C file at -O2, every compile a hit; tools interleaved round by round."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
