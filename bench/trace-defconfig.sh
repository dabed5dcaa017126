#!/usr/bin/env bash
# The original llama's headline table, predicted from a trace of Linux defconfig built here.
#
# Usage: bench/trace-defconfig.sh [--record] [--trace FILE]
#
# 1. Builds Linux (scripts/corpus-build linux, LLAMA_LINUX_CONFIG=defconfig) through llamacc
#    on the local executor, on an empty store, with two local slots at make -j200 (so
#    arrivals show when units became ready, not when make had a job free), traced as the
#    build `defconfig`; the make tree's CPU (kbuild's own per-unit work, which the trace does
#    not hold) is measured beside it. --trace FILE replays a trace kept from an earlier run
#    instead (with FILE.cpu, the make tree's CPU, beside it; the script prints where it kept
#    its own).
# 2. Replays it with `llama trace simulate` as the original's four rows ran:
#      desktop (24 threads), make -j30, here       -> calibrates the desktop's speed per
#                                                    thread against the original's 1:06
#      laptop (the desktop limited to 4 threads), make -j8, here  -> predicted, against 4:56
#      desktop and laptop, make -j100 on Lambda    -> predicted, against 0:42 and 1:26
#    The Lambda rows take the parameters below (each from AWS's documentation or measured
#    here; docs/traces.md lists them with their sources).
# Prints a markdown table; with --record appends it to bench/RESULTS.md with the date.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 trace=
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --trace) trace=$2; shift ;;
    *) echo "bench/trace-defconfig.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done

# Lambda: one vCPU per function at 1,769 MB, taken as one core of this machine.
WORKER_SPEED=1.0
# A new execution environment's start: AWS gives "under 100 ms to over 1 second"; an image
# function's first start is the slow end.
COLD_START_MS=1000
# Per remote compile, the requests in series: the invocation, and S3 round trips (inputs
# the client puts, the runtime's gets, its put of the object, the client's get), "tens of
# milliseconds" each for small objects: 4 × 30 ms + 30 ms for the invocation.
RTT_MS=150
# The client's CPU per remote compile of a kernel unit, measured here (bench/RESULTS.md,
# "scanner first" on Linux tinyconfig over Lambda's emulator): llamacc, the daemon's scan
# and key, and kbuild's own per-unit work (fixdep, the if_changed shell).
CLIENT_MS=105.4
# The original's figures (nelhage/llama README, Linux v5.10 defconfig).
DESKTOP_LOCAL=66 LAPTOP_LOCAL=296 DESKTOP_LAMBDA=42 LAPTOP_LAMBDA=86

[ -x /usr/bin/time ] || { echo "bench/trace-defconfig.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
cargo build --release --locked -p llama-cli --bins >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release
export PATH=$bin:$PATH LLAMACC_LOCAL_CC=gcc LLAMACC_LOCAL_CXX=g++ LLAMA_DAEMON_IDLE_TIMEOUT=10m
work=$(mktemp -d /tmp/llama-defconfig.XXXXXX)
trap 'LLAMA_DIR=$work/store llama daemon stop >/dev/null 2>&1 || true; rm -rf "$work/tree" "$work/store"' EXIT
export LLAMA_DIR=$work/store

if [ -z "$trace" ]; then
  scripts/corpus-fetch linux >&2
  scripts/corpus-tree linux "$work/tree" >/dev/null
  LLAMA_LINUX_CONFIG=defconfig LLAMA_JOBS=2 LLAMACC_BUILD_ID=defconfig \
    /usr/bin/time -f '%U %S' -o "$work/defconfig.jsonl.cpu" \
    scripts/corpus-build linux "$work/tree" llamacc llamacxx 200 2> "$work/build.log" >/dev/null \
    || { echo "bench/trace-defconfig.sh: the build failed; see $work/build.log" >&2; tail "$work/build.log" >&2; exit 1; }
  llama daemon stop >/dev/null 2>&1 || true
  trace=$work/defconfig.jsonl
  cp "$LLAMA_DIR/traces/defconfig.jsonl" "$trace"
  echo "bench/trace-defconfig.sh: kept the trace as $trace; $(grep 'built in' "$work/build.log")" >&2
else
  mkdir -p "$LLAMA_DIR/traces"
  cp "$trace" "$LLAMA_DIR/traces/defconfig.jsonl"
fi

report=$(llama trace report defconfig --json)
recorded=$(echo "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["wall_s"])')
compiles=$(echo "$report" | python3 -c 'import json,sys; print(json.load(sys.stdin)["actions"])')
# The client's CPU per compile of a build here: the make tree's (measured) and llamacc's own
# work the trace holds.
LOCAL_CLIENT_MS=$(echo "$report" | python3 -c "
import json, sys
r = json.load(sys.stdin)
cpu = sum(map(float, open('$trace.cpu').read().split()))
traced = sum(r['phase_s'].get(p, 0) for p in ('lookup', 'scan', 'deliver'))
print(round((cpu + traced) / r['actions'] * 1000, 1))")

simulate() { # flags... -> "wall_s bottleneck dollars"
  llama trace simulate defconfig "$@" --json \
    | python3 -c 'import json,sys; p=json.load(sys.stdin)[0]; print(p["wall_s"], p["bottleneck"].replace(" ", "_"), p.get("dollars", 0))'
}
local_row() { simulate --workers "$1" --client-cores "$1" --jobs "$2" --client-speed "$3" --client-ms "$LOCAL_CLIENT_MS"; }
lambda_row() {
  simulate --remote --workers 100 --jobs 100 --client-cores "$1" --client-speed "$2" \
    --client-ms "$CLIENT_MS" --worker-speed "$WORKER_SPEED" --rtt "$RTT_MS" --cold-start "$COLD_START_MS"
}

# The desktop's speed per thread, relative to this machine's core, such that 24 threads
# at -j30 take the original's 66 s (bisection on the replay).
speed=$(
  lo=0.1 hi=20
  for _ in $(seq 30); do
    mid=$(python3 -c "print(($lo * $hi) ** 0.5)")
    wall=$(local_row 24 30 "$mid" | cut -d' ' -f1)
    if python3 -c "import sys; sys.exit(0 if $wall > $DESKTOP_LOCAL else 1)"; then lo=$mid; else hi=$mid; fi
  done
  python3 -c "print(round(($lo * $hi) ** 0.5, 3))"
)

row() { # label make original "wall bottleneck dollars"
  set -- "$1" "$2" "$3" $4
  local error
  error=$(python3 -c "print(f'{($4 - $3) / $3 * 100:+.0f} %')")
  printf '| %s | %s | %s | %.0f s | %s | %s | %s |\n' "$1" "$2" \
    "$(date -u -d @"$3" +%-M:%S)" "$4" "$error" "${5//_/ }" "$(python3 -c "print(f'\${$6:.2f}' if $6 else '')")"
}
table="| configuration | build | the original's | predicted | error | bottleneck | Lambda cost |
|---|---|---|---|---|---|---|
$(row 'desktop, 24 threads (calibrates the speed)' 'make -j30' $DESKTOP_LOCAL "$(local_row 24 30 "$speed")")
$(row 'laptop, 4 threads' 'make -j8' $LAPTOP_LOCAL "$(local_row 4 8 "$speed")")
$(row 'desktop, Lambda' 'make -j100' $DESKTOP_LAMBDA "$(lambda_row 24 "$speed")")
$(row 'laptop, Lambda' 'make -j100' $LAPTOP_LAMBDA "$(lambda_row 4 "$speed")")"
summary="From a trace of $compiles compiles recorded here in $(printf %.0f "$recorded") s (two local slots, make -j200);
client CPU per compile built here $LOCAL_CLIENT_MS ms (make's tree and llamacc's own work). The
desktop's thread is $speed× this machine's core (calibrated on the first row); Lambda: worker
speed $WORKER_SPEED, cold start $COLD_START_MS ms, round trip $RTT_MS ms, client CPU $CLIENT_MS ms per compile ×
1/$speed on the original's threads, 100 workers."
echo "$table"
echo
echo "$summary"
if [ $record = 1 ]; then
  {
    echo
    echo "## The original's defconfig table, predicted from a trace ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
    echo
    echo "\`bench/trace-defconfig.sh\` (assumptions and sources: docs/traces.md)."
    echo
    echo "$table"
    echo
    echo "$summary"
  } >> bench/RESULTS.md
fi
