#!/usr/bin/env bash
# Calibrates `llama trace simulate` on the local executor: records a build with one local
# slot, predicts it with two, builds it with two for real, and compares.
#
# Usage: bench/trace-calibrate.sh [--record] [--jobs J] [CORPUS...]   (default: lua git)
#        bench/trace-calibrate.sh [--record] --reapi [CORPUS]          (default: lua)
#
# For each corpus (scripts/corpus-build's names), on an empty store each time:
#   1. build with LLAMA_JOBS=1 (one compile at a time in the daemon) at make -jJ (default
#      16, so arrivals show when units became ready, not when a slot came free), traced as
#      CORPUS-1slot;
#   2. `llama trace simulate CORPUS-1slot --workers 2 --client-cores 2`: the prediction;
#   3. build with LLAMA_JOBS=2, traced as CORPUS-2slots: the measurement.
# Wall times are the traces' own (first compile's arrival to last compile's answer), so
# prediction and measurement cover the same span; make's own time is shown beside them.
# The last columns add what the trace does not hold: the build tool's own CPU per compile
# (make, its shells, the llamacc processes: the recorded build's make tree, measured with
# /usr/bin/time), replayed with --client-ms.
# With --reapi, against BuildGrid (scripts/install-test-servers) instead: the corpus built
# with one bot at -j16, replayed with two bots at -j16 and at -j2 (--remote --jobs), and
# both built for real on fresh servers and stores (crates/llama-cli/tests/reapi.rs,
# calibrate_trace_over_buildgrid, ignored by the test suite).
# Prints a markdown table; with --record, appends it to bench/RESULTS.md with the date.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 jobs=16 corpora=() reapi=0
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --reapi) reapi=1 ;;
    --jobs) jobs=$2; shift ;;
    -*) echo "bench/trace-calibrate.sh: unknown flag $1 (see the header of this script)" >&2; exit 2 ;;
    *) corpora+=("$1") ;;
  esac
  shift
done
if [ $reapi = 1 ]; then
  corpus=${corpora[0]:-lua}
  scripts/install-test-servers >/dev/null
  scripts/corpus-fetch "$corpus" >/dev/null
  out=$(LLAMA_BENCH_CORPUS=$corpus cargo test --release --locked -p llama-cli --test tests \
    reapi::calibrate_trace_over_buildgrid -- --ignored --nocapture --test-threads 1 2>&1) \
    || { echo "bench/trace-calibrate.sh: the calibration failed:" >&2; echo "$out" | tail -40 >&2; exit 1; }
  table=$(echo "$out" | grep '^|')
  echo "$table"
  if [ $record = 1 ]; then
    {
      echo
      echo "### Trace replay calibrated on BuildGrid ($(date -u +%Y-%m-%d), $(nproc) cores, bots on this machine)"
      echo
      echo "\`bench/trace-calibrate.sh --reapi $corpus\`: recorded with one bot at -j16, replayed with two"
      echo "bots (\`llama trace simulate --remote --workers 2 --client-cores 2 --jobs J\`), then built so."
      echo
      echo "$table"
    } >> bench/RESULTS.md
  fi
  exit 0
fi
[ ${#corpora[@]} -gt 0 ] || corpora=(lua git)

[ -x /usr/bin/time ] || { echo "bench/trace-calibrate.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
cargo build --release --locked -p llama-cli --bins >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release
export PATH=$bin:$PATH LLAMACC_LOCAL_CC=gcc LLAMACC_LOCAL_CXX=g++ LLAMA_DAEMON_IDLE_TIMEOUT=10m
scripts/corpus-fetch "${corpora[@]}" >&2
work=$(mktemp -d /tmp/llama-calibrate.XXXXXX)
trap 'LLAMA_DIR=$work/store llama daemon stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export LLAMA_DIR=$work/store

wall_of() { llama trace report "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["wall_s"])'; }

build() { # corpus slots -> make's seconds; leaves the trace CORPUS-<slots>
  local corpus=$1 slots=$2 tree=$work/$1
  llama daemon stop >/dev/null 2>&1 || true
  rm -rf "$tree" "$LLAMA_DIR"
  scripts/corpus-tree "$corpus" "$tree" >/dev/null
  LLAMA_JOBS=$slots LLAMACC_BUILD_ID=$corpus-$slots /usr/bin/time -f '%U %S' -o "$work/$corpus-$slots.cpu" \
    scripts/corpus-build "$corpus" "$tree" llamacc llamacxx "$jobs" \
    2> "$work/$corpus-$slots.log" >/dev/null \
    || { echo "bench/trace-calibrate.sh: $corpus with $slots slot(s) failed; see $work/$corpus-$slots.log" >&2; tail "$work/$corpus-$slots.log" >&2; exit 1; }
  llama daemon stop >/dev/null 2>&1 || true
  sed -n 's/.* built in \([0-9.]*\) s.*/\1/p' "$work/$corpus-$slots.log"
}

table="| corpus | recorded: 1 slot (s) | predicted: 2 slots (s) | measured: 2 slots (s) | error | make, 1 / 2 slots (s) | bottleneck predicted | build tool's CPU / compile (ms) | predicted with it (s) | error |
|---|---|---|---|---|---|---|---|---|---|"
for corpus in "${corpora[@]}"; do
  make1=$(build "$corpus" 1)
  # The store is emptied by the next build; the trace is kept aside.
  cp "$LLAMA_DIR/traces/$corpus-1.jsonl" "$work/$corpus-1.jsonl"
  recorded=$(wall_of "$corpus-1")
  make2=$(build "$corpus" 2)
  mkdir -p "$LLAMA_DIR/traces" && cp "$work/$corpus-1.jsonl" "$LLAMA_DIR/traces/"
  prediction=$(llama trace simulate "$corpus-1" --workers 2 --client-cores 2 --json)
  predicted=$(echo "$prediction" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["wall_s"])')
  bottleneck=$(echo "$prediction" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["bottleneck"])')
  measured=$(wall_of "$corpus-2")
  error=$(python3 -c "print(f'{($predicted - $measured) / $measured * 100:+.1f} %')")
  # The model's client is llamacc's own work; the build tool's (make, its shells, kbuild's
  # fixdep, the llamacc processes) is not in the trace. Measured for the recorded build
  # (its make tree's CPU; the compiles ran in the daemon's), it is added per compile.
  per_compile=$(llama trace report "$corpus-1" --json | python3 -c "
import json, sys
r = json.load(sys.stdin)
cpu = sum(map(float, open('$work/$corpus-1.cpu').read().split()))
traced = sum(r['phase_s'].get(p, 0) for p in ('lookup', 'scan', 'deliver'))
print(round((cpu + traced) / r['actions'] * 1000, 1))")
  with_tool=$(llama trace simulate "$corpus-1" --workers 2 --client-cores 2 --client-ms "$per_compile" --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["wall_s"])')
  error_tool=$(python3 -c "print(f'{($with_tool - $measured) / $measured * 100:+.1f} %')")
  table+="
| $corpus | $(printf %.2f "$recorded") | $(printf %.2f "$predicted") | $(printf %.2f "$measured") | $error | $make1 / $make2 | $bottleneck | $per_compile | $(printf %.2f "$with_tool") | $error_tool |"
done
echo "$table"
if [ $record = 1 ]; then
  {
    echo
    echo "### Trace replay calibrated on the local executor ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "\`bench/trace-calibrate.sh --jobs $jobs ${corpora[*]}\`: each build recorded with one local slot"
    echo "and make -j$jobs, replayed with two (\`llama trace simulate --workers 2 --client-cores 2\`),"
    echo "then built with two slots for real; walls are the traces' (first arrival to last answer)."
    echo
    echo "$table"
  } >> bench/RESULTS.md
fi
