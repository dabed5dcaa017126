#!/usr/bin/env bash
# What laying out one action's inputs costs the local executor, and so the Lambda runtime
# (which runs every action through it): each input copied from the cache and verified (what
# runtimes did before), against each input a hard link to the cache's read-only, verified
# blob. The action has a compile's shape of inputs: this machine's gcc toolchain (driver,
# cc1, as, ld and their shared libraries, executable) and 700 headers from /usr/include; its
# command is /bin/true, so everything measured is overhead. Both layouts in one run, same
# store; medians of 20 actions each, and the ratio.
#
# Usage: bench/runtime-layout.sh [--record]
# The measurement lives in crates/llama-exec/tests/layout_bench.rs (ignored by the suite).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
record=0
case "${1:-}" in
  --record) record=1 ;;
  "") ;;
  *) echo "bench/runtime-layout.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
esac
out=$(cargo test --release --locked -p llama-exec --test layout_bench -- --ignored --nocapture 2>/dev/null)
table=$(echo "$out" | grep '^|')
[ -n "$table" ] || { echo "bench/runtime-layout.sh: the benchmark printed no table:" >&2; echo "$out" >&2; exit 1; }
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## Laying out an action's inputs: copy against link — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/runtime-layout.sh --record\` (one run; the local executor as the runtime uses it,"
    echo "gcc $(gcc -dumpfullversion)'s toolchain and headers from /usr/include; the command is /bin/true)."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
