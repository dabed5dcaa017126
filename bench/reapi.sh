#!/usr/bin/env bash
# llamacc on the reapi backend: what one compile costs the client, on lua, against BuildGrid
# 0.4.4 (with PostgreSQL 15 and the test worker, all on this machine), next to plain gcc in
# the same run.
#
# Usage: bench/reapi.sh [--record]
#
# Three builds of lua at one path, each after the corpus' make clean: plain gcc; llamacc on
# an empty LLAMA_DIR and a fresh BuildGrid (every compile executes remotely, the toolchain
# and headers go up once); llamacc on a new LLAMA_DIR (another machine: every compile is a
# remote action-cache hit). Client CPU: make's children (gcc, or the llamacc processes) plus
# the llama daemon and its children (the dependency scans), per compile. Calls: gRPC calls to
# the server (round trips; each ByteStream transfer counts one). The harness and the
# measurement live in crates/llama-cli/tests/reapi.rs (bench_lua_over_reapi, ignored by the
# test suite). Prints a markdown table; with --record, appends it to bench/RESULTS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0
case "${1:-}" in
  --record) record=1 ;;
  "") ;;
  *) echo "bench/reapi.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
esac

scripts/install-test-servers >/dev/null
scripts/corpus-fetch lua >/dev/null
out=$(cargo test --release --locked -p llama-cli --test tests reapi::bench_lua_over_reapi \
  -- --ignored --nocapture --test-threads 1 2>/dev/null)
table=$(echo "$out" | grep '^|')
[ -n "$table" ] || { echo "bench/reapi.sh: the benchmark printed no table:" >&2; echo "$out" >&2; exit 1; }
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## llamacc on the reapi backend (BuildGrid on this machine) — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/reapi.sh --record\` (one run; BuildGrid 0.4.4 + PostgreSQL 15, the test worker with 2 bots,"
    echo "gcc $(gcc -dumpfullversion)). first: empty LLAMA_DIR and BuildGrid; second: a new LLAMA_DIR, every compile a remote"
    echo "action-cache hit. Client CPU: make's children plus the llama daemon and its dependency scans, per compile."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
