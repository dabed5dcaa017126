#!/usr/bin/env bash
# llama xargs against GNU parallel (and GNU xargs for reference), side by side in one run:
#   1. per-job overhead: 1,000 trivial jobs (`true N`);
#   2. the original llama's example: optipng over a folder of generated PNGs.
# llama runs cold (empty store before every run) and warm (everything cached). hyperfine
# applies a lone --prepare to every command, so each command names its own.
# Prints a markdown table of mean wall times and ratios to parallel; with --record, appends
# it to bench/RESULTS.md with the date and machine.
#
# Usage: bench/xargs.sh [--record] [--jobs N] [--images N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

record=0 jobs=2 images=151 runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --record) record=1 ;;
    --jobs) jobs=$2; shift ;;
    --images) images=$2; shift ;;
    --runs) runs=$2; shift ;;
    *) echo "bench/xargs.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done

need=()
for tool in parallel optipng hyperfine; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo build --release --locked -p llama-cli --bin llama --example gen_pngs
llama=$root/target/release/llama
out=$root/bench/out/xargs
rm -rf "$out" && mkdir -p "$out/pngs"
"$root/target/release/examples/gen_pngs" "$out/pngs" "$images" >/dev/null
export LLAMA_DIR=$out/store
# GNU parallel asks for a citation once per user unless told it was seen.
mkdir -p ~/.parallel && touch ~/.parallel/will-cite

cd "$out/pngs"
png_llama="ls -1 *.png | $llama xargs -j $jobs optipng optipng '{{.I .Line}}' -out '{{.O (printf \"optimized/%s\" .Line)}}' >/dev/null 2>&1"
png_parallel="ls -1 *.png | parallel -j $jobs optipng {} -out optimized/{} >/dev/null 2>&1"
hyperfine --style basic --runs "$runs" --warmup 1 --export-json "$out/trivial.json" \
  -n "parallel" --prepare true "seq 1000 | parallel -j $jobs true {}" \
  -n "xargs -P" --prepare true "seq 1000 | xargs -P $jobs -n 1 true" \
  -n "llama cold" --prepare "rm -rf $LLAMA_DIR" "seq 1000 | $llama xargs -j $jobs f true '{{.Line}}'" \
  -n "llama warm" --prepare true "seq 1000 | $llama xargs -j $jobs f true '{{.Line}}'" >&2
hyperfine --style basic --runs "$runs" --warmup 1 --export-json "$out/png.json" \
  -n "parallel" --prepare "rm -rf optimized && mkdir optimized" "$png_parallel" \
  -n "llama cold" --prepare "rm -rf optimized $LLAMA_DIR" "$png_llama" \
  -n "llama warm" --prepare "rm -rf optimized" "$png_llama" >&2

table=$(python3 - "$out/trivial.json" "$out/png.json" "$images" "$jobs" <<'PY'
import json, sys
trivial, png, images, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
def rows(path, title):
    results = {r["command"]: r for r in json.load(open(path))["results"]}
    base = results["parallel"]["mean"]
    out = [f"| {title} | tool | mean s | ± s | × parallel |", "|---|---|---|---|---|"]
    for name, r in results.items():
        out.append(f"| | {name} | {r['mean']:.3f} | {r['stddev']:.3f} | {r['mean']/base:.2f} |")
    return "\n".join(out)
print(rows(trivial, f"1,000 trivial jobs, -j {jobs}"))
print()
print(rows(png, f"optipng on {images} PNGs, -j {jobs}"))
PY
)
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## llama xargs vs GNU parallel — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/xargs.sh --record --jobs $jobs --images $images --runs $runs\` (hyperfine, $runs runs each after a warm-up;"
    echo "llama cold = empty store before every run, warm = every job served from the action cache)."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
