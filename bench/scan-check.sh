#!/usr/bin/env bash
# The include scanner against the compiler's own -M, on every compile of real builds.
#
# Usage: bench/scan-check.sh [--record] [--cc gcc|clang] CORPUS...
#        CORPUS: lua | leveldb | ninja | git | openssl | linux (scripts/corpus-fetch first)
#
# Each corpus is built from a pristine tree (scripts/corpus-tree, scripts/corpus-build) with
# the compiler wrapped in llama-cc's `scan_check` example: for every compile it walks the
# includes with the scanner, asks the compiler the same with -M, logs both, then compiles.
# Reported per corpus: compiles checked, compiles where the scanner missed a header gcc read
# (must be 0), compiles where it gave up (the daemon would fall back to -M), by reason, and
# the mean number of headers it listed beyond gcc's.
# With --record the table is appended to bench/RESULTS.md with the date and machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

record=0 cc=gcc corpora=()
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --cc) cc=$2; shift ;;
    -*) echo "bench/scan-check.sh: unknown flag $1 (see the header of this script)" >&2; exit 2 ;;
    *) corpora+=("$1") ;;
  esac
  shift
done
[ ${#corpora[@]} -gt 0 ] || { echo "bench/scan-check.sh: name at least one corpus" >&2; exit 2; }
case $cc in
  gcc) cxx=g++ ;;
  clang) cxx=clang++ ;;
  *) echo "bench/scan-check.sh: --cc takes gcc or clang" >&2; exit 2 ;;
esac

cargo build --release --locked -p llama-cc --example scan_check
check=${CARGO_TARGET_DIR:-$root/target}/release/examples/scan_check
work=$(mktemp -d /tmp/llama-scan-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

table="| corpus | compiler | compiles | missed a header | gave up | headers gcc read (mean) | extra listed (mean) | why it gave up |
|---|---|---|---|---|---|---|---|"
missed_any=0
for corpus in "${corpora[@]}"; do
  tree=$work/$corpus log=$work/$corpus.log
  "$root/scripts/corpus-tree" "$corpus" "$tree" >/dev/null
  SCAN_CHECK_LOG=$log "$root/scripts/corpus-build" "$corpus" "$tree" "$check $cc" "$check $cxx" \
    > "$work/$corpus.build.log" 2>&1 \
    || { echo "bench/scan-check.sh: the $corpus build failed (see below)" >&2; tail -30 "$work/$corpus.build.log" >&2; exit 1; }
  row=$(awk -F'\t' -v corpus="$corpus" -v cc="$cc" '
    $1 == "skipped" { next }
    { n++; read += $2; extra += $3 }
    $1 == "missed" { missed++; print "missed: " $4 ": " $5 > "/dev/stderr" }
    $1 == "fallback" { gave++; split($5, why, ":"); reasons[why[1]]++ }
    END {
      r = ""; for (k in reasons) r = r (r == "" ? "" : ", ") k " " reasons[k]
      printf "| %s | %s | %d | %d | %d | %.1f | %.1f | %s |", corpus, cc, n, missed, gave,
        n ? read / n : 0, n ? extra / n : 0, r == "" ? "-" : r
    }' "$log")
  table+=$'\n'"$row"
  grep -q '^missed' "$log" && missed_any=1
  echo "bench/scan-check.sh: $corpus done" >&2
done
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## The include scanner against -M — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/scan-check.sh --record --cc $cc ${corpora[*]}\` ($($cc --version | head -1))."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
exit "$missed_any"
