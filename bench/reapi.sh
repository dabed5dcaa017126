#!/usr/bin/env bash
# llamacc on the reapi backend: what one compile costs the client, against BuildGrid 0.4.4
# (with PostgreSQL 15 and the test worker, all on this machine), next to plain gcc in the
# same run, with the inputs listed by the compiler's `-M` and by the include scanner.
#
# Usage: bench/reapi.sh [--record] [--corpus NAME]   (default lua; NAME: scripts/corpus-build's)
#
# Seven builds of the corpus at one path, each after the corpus' make clean: plain gcc; then
# for each lister (LLAMACC_INCLUDE_SCANNER=0, the compiler's -M; the scanner, the default;
# LLAMACC_LOCAL_PREPROCESS=1, the source preprocessed here and shipped without headers),
# on a fresh BuildGrid: llamacc on an empty LLAMA_DIR (every compile executes remotely, the
# toolchain and headers go up once), and llamacc on a new LLAMA_DIR (another machine: every
# compile is a remote action-cache hit). Client CPU: make's children (gcc, or the llamacc
# processes, and the build's own tools) plus the llama daemon and its children (the -M scans,
# the scanner's probes), per compile that went the remote path; the daemon's share on its
# own. Calls: gRPC calls to the server (round trips; each ByteStream transfer counts one).
# The harness and the measurement live in crates/llama-cli/tests/reapi.rs (bench_over_reapi,
# ignored by the test suite). Prints a markdown table; with --record, appends it to
# bench/RESULTS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 corpus=lua
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --corpus) corpus=$2; shift ;;
    *) echo "bench/reapi.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done

scripts/install-test-servers >/dev/null
scripts/corpus-fetch "$corpus" >/dev/null
out=$(LLAMA_BENCH_CORPUS=$corpus cargo test --release --locked -p llama-cli --test tests reapi::bench_over_reapi \
  -- --ignored --nocapture --test-threads 1 2>&1) \
  || { echo "bench/reapi.sh: the benchmark failed:" >&2; echo "$out" | grep -v '^\s*$' | tail -40 >&2; exit 1; }
table=$(echo "$out" | grep '^|')
[ -n "$table" ] || { echo "bench/reapi.sh: the benchmark printed no table:" >&2; echo "$out" >&2; exit 1; }
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## llamacc on the reapi backend (BuildGrid on this machine), $corpus — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/reapi.sh --record --corpus $corpus\` (one run; BuildGrid 0.4.4 + PostgreSQL 15, the test worker"
    echo "with 2 bots, gcc $(gcc -dumpfullversion)). first: empty LLAMA_DIR and a fresh BuildGrid; second: a new LLAMA_DIR, every"
    echo "compile a remote action-cache hit. -M: LLAMACC_INCLUDE_SCANNER=0; scanner: the default. Client CPU: make's children"
    echo "plus the llama daemon and its children (-M scans, probes), per compile that went the remote path."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
