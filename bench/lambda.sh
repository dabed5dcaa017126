#!/usr/bin/env bash
# llamacc on the lambda backend: what one compile costs the client, against the local
# harness (s3s-fs as S3, cargo-lambda's emulator, llama-runtime processes on this machine),
# next to plain gcc in the same run, with the inputs listed by the compiler's `-M` and by the
# include scanner.
#
# Usage: bench/lambda.sh [--record] [--jobs N] [--runtimes N] [--corpus NAME]
#        [--perf] (defaults: -j16, 4 runtimes, lua; NAME is one of scripts/corpus-build's)
#
# Five builds of the corpus at one path, each after the corpus' make clean, every llamacc
# build's objects compared byte for byte with the plain build's (the script fails if one
# differs):
#   gcc             plain gcc: the CPU a local compile costs;
#   -M first        llamacc with LLAMACC_INCLUDE_SCANNER=0 (the compiler's -M lists each
#                   compile's inputs), an empty S3 prefix and LLAMA_DIR: every compile runs
#                   remotely, every header and toolchain file is uploaded;
#   -M second       the same with a new, empty LLAMA_DIR (another machine, or a wiped
#                   cache): every compile is served from the S3 action cache;
#   scanner first   as "-M first" with the include scanner (the default), its own S3 prefix;
#   scanner second  as "-M second" with the include scanner.
# Client CPU is what this machine spent for the build outside the runtimes: make's children
# (llamacc processes, or gcc, and the build's own tools) plus the llama daemon and its
# children (the -M scans, the scanner's probes), per compile that went the remote path. The
# daemon's share is shown on its own. Bytes and requests come from `llama stats` (the
# client's own S3 traffic and invocations) and from s3s-fs's request log (every S3 request,
# the runtimes' included). Prints a markdown table; with --record, appends it to
# bench/RESULTS.md. With --perf, each llamacc build's daemon is sampled by `perf record`
# (bench/out/lambda/NAME.perf) and its hottest functions are printed after the table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

record=0 jobs=16 runtimes=4 corpus=lua perf=0
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=1 ;;
    --jobs) jobs=$2; shift ;;
    --runtimes) runtimes=$2; shift ;;
    --corpus) corpus=$2; shift ;;
    --perf) perf=1 ;;
    *) echo "bench/lambda.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done

scripts/install-test-servers >/dev/null
scripts/corpus-fetch "$corpus" >/dev/null
cargo build --release --locked -p llama-cli --bins -p llama-runtime
bin=${CARGO_TARGET_DIR:-$root/target}/release
tools=${LLAMA_TEST_TOOLS:-/opt/llama-test}
s3s_fs=$tools/s3s-fs-0.14.1/bin/s3s-fs
cargo_lambda=$tools/cargo-lambda-1.9.2/bin/cargo-lambda

out=$root/bench/out/lambda
rm -rf "$out" && mkdir -p "$out/s3/bench" "$out/emulator"
pids=()
cleanup() {
  for d in "$out"/llama-*; do LLAMA_DIR=$d "$bin/llama" daemon stop >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
s3_port=$(free_port) lambda_port=$(free_port)
export AWS_ACCESS_KEY_ID=llamabench AWS_SECRET_ACCESS_KEY=llamabenchsecret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$s3_port
RUST_LOG=error,s3s::ops=debug "$s3s_fs" --host 127.0.0.1 --port "$s3_port" \
  --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$out/s3" \
  > "$out/s3.log" 2>&1 &
pids+=($!)
cat > "$out/emulator/Cargo.toml" <<'EOF'
[package]
name = "emulator"
version = "0.0.0"
edition = "2021"
[[bin]]
name = "emulator"
path = "main.rs"

[workspace]
EOF
(cd "$out/emulator" && exec "$cargo_lambda" lambda watch --only-lambda-apis -A 127.0.0.1 \
  -P "$lambda_port" --timeout 120 > "$out/emulator.log" 2>&1) &
pids+=($!)
ready=0
for _ in $(seq 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$lambda_port") 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || { echo "bench/lambda.sh: s3s-fs or the emulator did not start; see $out/s3.log and $out/emulator.log" >&2; exit 1; }
for i in $(seq "$runtimes"); do
  AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:$lambda_port/.rt AWS_LAMBDA_FUNCTION_NAME=_ \
    AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1769 \
    LLAMA_RUNTIME_CACHE=$out/runtime-$i "$bin/llama-runtime" > "$out/runtime-$i.log" 2>&1 &
  pids+=($!)
done

export AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:$lambda_port
# A compile that fails remotely fails the build: nothing is measured that ran here instead.
export LLAMACC_FUNCTION=_ LLAMACC_LOCAL_CC=gcc LLAMACC_LOCAL_CXX=g++ LLAMACC_LOCAL_FALLBACK=0
export LLAMA_REMOTE_JOBS=$runtimes
export LLAMA_DAEMON_IDLE_TIMEOUT=30m

tree=/tmp/llama-bench-lambda/$corpus
rm -rf "$tree"
scripts/corpus-tree "$corpus" "$tree" >/dev/null

# CPU seconds of a process and its reaped children, from /proc/PID/stat.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"
}
s3_ops() { grep -c "checked access, op: $1" "$out/s3.log" || true; }

results=$out/results.tsv
: > "$results"
build() { # NAME CC LLAMA_DIR|- [LISTER: scanner|-M]
  local name=$1 cc=$2 dir=$3 lister=${4:-} before_put before_get before_head cpu_make cpu_daemon=0
  local cxx=$cc
  [ "$cc" = gcc ] && cxx=g++
  scripts/corpus-build "$corpus" "$tree" --clean >/dev/null 2>&1
  before_put=$(s3_ops PutObject) before_get=$(s3_ops GetObject) before_head=$(s3_ops HeadObject)
  if [ "$dir" != - ]; then
    export LLAMA_DIR=$dir LLAMA_BACKEND=lambda LLAMA_OBJECT_STORE=s3://bench/$corpus-${lister/-M/m}
    "$bin/llama" daemon start >/dev/null
    if [ "$perf" = 1 ]; then
      local pid
      pid=$("$bin/llama" daemon status 2>/dev/null | awk '$1 == "pid" { print $2 }')
      perf record -q -F 249 --call-graph dwarf,16384 -p "$pid" -o "$out/${name// /-}.perf" >/dev/null 2>&1 &
      perf_pid=$!
    fi
  fi
  local scanner=1
  [ "$lister" = -M ] && scanner=0
  local times=$out/${name// /-}.time
  LLAMACC_INCLUDE_SCANNER=$scanner /usr/bin/time -f '%e %U %S' -o "$times" \
    scripts/corpus-build "$corpus" "$tree" "$cc" "$cxx" "$jobs" > "$out/${name// /-}.log" 2>&1
  read -r wall user sys < "$times"
  cpu_make=$(echo "$user + $sys" | bc -l)
  local stats='{}'
  if [ "$dir" != - ]; then
    local pid
    pid=$("$bin/llama" daemon status 2>/dev/null | awk '$1 == "pid" { print $2 }')
    [ -n "$pid" ] && cpu_daemon=$(cpu_of "$pid")
    stats=$("$bin/llama" stats --json)
    if [ "$perf" = 1 ]; then
      kill -INT "$perf_pid" 2>/dev/null || true
      wait "$perf_pid" 2>/dev/null || true
    fi
    "$bin/llama" daemon stop >/dev/null
    unset LLAMA_DIR LLAMA_BACKEND LLAMA_OBJECT_STORE
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "$cpu_make" "$cpu_daemon" \
    "$(( $(s3_ops PutObject) - before_put ))" "$(( $(s3_ops GetObject) - before_get ))" \
    "$(( $(s3_ops HeadObject) - before_head ))" "$(echo "$stats" | tr -d '\n')" >> "$results"
  echo "bench: $corpus $name: ${wall}s wall" >&2
}
# The objects of the plain build, kept to compare every llamacc build with, byte for byte.
ref=$out/reference
keep_objects() {
  rm -rf "$ref" && mkdir -p "$ref"
  (cd "$tree" && find . -type f -name '*.o' -print0 | tar --null -T - -cf -) | (cd "$ref" && tar -xf -)
}
identical() {
  scripts/corpus-build "$corpus" "$tree" --check >/dev/null
  scripts/compare-objects --corpus "$corpus" "$ref" "$tree" >&2
}
build gcc gcc -
keep_objects
for lister in -M scanner; do
  build "$lister first" "$bin/llamacc" "$out/llama-$lister-1" "$lister"
  identical
  build "$lister second" "$bin/llamacc" "$out/llama-$lister-2" "$lister"
  identical
done

table=$(python3 - "$results" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print("| CORPUS, -jJOBS | wall s | client CPU ms / compile | × gcc | of it, daemon | bytes up / compile | client S3 req / compile | all S3 PUT / GET / HEAD | invocations | from S3 action cache | headers by scanner / -M |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
parsed = []
for name, wall, cpu_make, cpu_daemon, puts, gets, heads, stats in rows:
    stats = json.loads(stats) if stats.strip() else {}
    c = stats.get("counters", {})
    n = c.get("remote", 0) + c.get("hits", 0) + c.get("compile_errors", 0)
    parsed.append((name, wall, cpu_make, cpu_daemon, puts, gets, heads, stats, n))
# gcc compiled as many units as the first llamacc build sent down the remote path.
units = next((p[8] for p in parsed if p[8]), 1)
base = None
for name, wall, cpu_make, cpu_daemon, puts, gets, heads, stats, n in parsed:
    n = n or units
    cost = stats.get("cost", {})
    sc = stats.get("scanner", {})
    walked = sc.get("walked", 0)
    asked = sum(v for k, v in sc.items() if k != "walked")
    cpu = (float(cpu_make) + float(cpu_daemon)) * 1000 / n
    base = base or cpu
    lists = f"{walked} / {asked}" if stats else ""
    print(f"| {name} | {float(wall):.1f} | {cpu:.1f} | {cpu/base:.2f} | {float(cpu_daemon)*1000/n:.1f} | "
          f"{cost.get('bytes_up', 0)/n:,.0f} | {cost.get('s3_requests', 0)/n:.1f} | {puts} / {gets} / {heads} | "
          f"{cost.get('invocations', 0):.0f} | {cost.get('remote_cache_hits', 0):.0f} | {lists} |")
PY
)
table=${table//CORPUS/$corpus}
if [ "$perf" = 1 ]; then
  for f in "$out"/*.perf; do
    echo "== $(basename "$f" .perf): the daemon's hottest functions (self, % of its samples)" >&2
    perf report -q -i "$f" --no-children --sort symbol --percent-limit 1.5 2>/dev/null \
      | grep -v '^$' | grep -v '^ *|' | grep -v '^ *-' | head -25 >&2 || true
  done
fi
table=${table//JOBS/$jobs}
echo "$table"
if [ "$record" = 1 ]; then
  {
    echo
    echo "## llamacc on the lambda backend (local harness), $corpus — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bench/lambda.sh --record --jobs $jobs --runtimes $runtimes --corpus $corpus\` (one run; s3s-fs 0.14.1"
    echo "as S3, cargo-lambda 1.9.2's emulator, $runtimes llama-runtime processes on the same machine, gcc $(gcc -dumpfullversion))."
    echo "first: empty S3 prefix and LLAMA_DIR; second: a new LLAMA_DIR, so every compile is an S3 action-cache hit."
    echo "-M: LLAMACC_INCLUDE_SCANNER=0; scanner: the default. Client CPU: make's children plus the llama daemon and its"
    echo "children (-M scans, probes), per compile that went the remote path."
    echo
    echo "$table"
  } >> "$root/bench/RESULTS.md"
fi
