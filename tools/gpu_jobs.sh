#!/usr/bin/env bash
# The standard GPU jobs: the GPU test suite, the sanitizers and the benchmarks beside their peers.
# Run from the repository root on a GPU host. If .gpu/setup.sh exists (the offline bundle, see
# docs/development.md) it is sourced first; otherwise the packages must already be installed.
#
#   bash tools/gpu_jobs.sh tests [PYTEST_ARGS...]   # pytest -m gpu over xdist workers (default: all but the
#                                                   # candidate rows, -k "not alt_rows"), about 6 min
#   bash tools/gpu_jobs.sh sanitize [TOOLS...]      # compute-sanitizer memcheck racecheck synccheck
#   bash tools/gpu_jobs.sh bench-fwd                # forward grids (anchor + seed), then anchor at SM120 occupancy
#   bash tools/gpu_jobs.sh bench-bwd                # backward grid, compat mode and at SM120 occupancy
#   bash tools/gpu_jobs.sh bench-decode             # decode (contiguous and paged K/V; bf16 and FP8 caches, FP8 also
#                                                   # at SM120 occupancy, and with fp16 queries), prefill chunks
#                                                   # over an FP8 cache, host time
#   bash tools/gpu_jobs.sh bench-q8                 # the 8-bit forward beside fa4's bf16 forward
#   bash tools/gpu_jobs.sh bench-ring               # context parallelism on this host's GPUs (torchrun)
#   bash tools/gpu_jobs.sh accuracy                 # forward error beside SDPA flash and upstream (seed grid)
#   bash tools/gpu_jobs.sh bench                    # the six above
#   bash tools/gpu_jobs.sh all                      # tests, sanitize, bench
#
# Every step runs under its own time limit; logs go to $OUT/logs and result files (JSON and PNG) to
# $OUT/results (OUT defaults to .gpu/out, git-ignored). Copy the results you keep to benchmarks/results.
# Environment: FA4_GPU_WORKERS (xdist workers, default 14), FA4_BENCH_REP_MS (default 30).
set -uo pipefail
if [[ -f .gpu/setup.sh ]]; then
  source .gpu/setup.sh >/dev/null || exit 1
fi
OUT="${OUT:-.gpu/out}"
LOGS="$OUT/logs"
RESULTS="$OUT/results"
mkdir -p "$LOGS" "$RESULTS"
export FA4_BENCH_REP_MS="${FA4_BENCH_REP_MS:-30}"
PYTEST_GPU=(python3 -m pytest -m gpu -q -p no:cacheprovider)
if python3 -c "import xdist" 2>/dev/null; then # loadgroup keeps the large-reference cases in one worker
  PYTEST_GPU+=(-n "${FA4_GPU_WORKERS:-14}" --dist loadgroup)
fi
failed=0

step() { # step NAME SECONDS COMMAND...: run COMMAND under a time limit, log to $LOGS/NAME.log
  local name=$1 secs=$2
  shift 2
  echo "== $name (limit ${secs}s)"
  timeout "$secs" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$LOGS/$name.log" | sed "s/^/   /"
  echo "   rc=$rc"
  [[ $rc -eq 0 ]] || failed=1
}

warm_fwd_cache() { # compile the forward grids' variants into the disk cache, 8 processes at a time
  local d dt c
  for d in 64 128; do for dt in bf16 fp16; do for c in yes no; do
    timeout 200 python3 -m fa4_torch warmup --shapes 16,16,$d 16,8,$d 16,1,$d 32,8,$d --dtype $dt \
      --causal $c >"$LOGS/warmup-d$d-$dt-$c.log" 2>&1 &
  done; done; done
  wait
}

job() {
  case "$1" in
    tests)
      shift
      local args=("$@")
      [[ ${#args[@]} -gt 0 ]] || args=(tests -k "not alt_rows")
      step tests 540 "${PYTEST_GPU[@]}" "${args[@]}" --junitxml="$LOGS/tests.xml"
      ;;
    sanitize)
      shift
      step sanitize 540 bash tools/sanitize.sh "$@"
      ;;
    bench-fwd)
      warm_fwd_cache
      step bench-fwd 420 python3 benchmarks/bench_fwd.py --grid anchor seed --out "$RESULTS"
      step bench-fwd-sm120 300 python3 benchmarks/bench_fwd.py --grid anchor --emulate-sm120 --out "$RESULTS"
      ;;
    bench-bwd)
      step bench-bwd 300 python3 benchmarks/bench_bwd.py --out "$RESULTS"
      step bench-bwd-sm120 260 python3 benchmarks/bench_bwd.py --emulate-sm120 \
        --peers fa4 sdpa_flash fa4_upstream_sm120 --no-fwdbwd --out "$RESULTS"
      ;;
    bench-decode)
      step bench-decode 220 python3 benchmarks/bench_decode.py --out "$RESULTS"
      step bench-decode-fp8 300 python3 benchmarks/bench_decode_fp8.py --out "$RESULTS"
      step bench-decode-fp8-sm120 300 python3 benchmarks/bench_decode_fp8.py --emulate-sm120 --out "$RESULTS"
      step bench-decode-fp8-sm120-fp16 150 python3 benchmarks/bench_decode_fp8.py --quick --emulate-sm120 \
        --dtype float16 --out "$RESULTS"
      step kv8-prefill-sm120 150 python3 tools/kv8_prefill.py --emulate-sm120 --out "$RESULTS"
      step host-time 120 python3 tools/host_time.py --out "$RESULTS"
      ;;
    bench-q8)
      step bench-q8 300 python3 benchmarks/bench_q8.py --out "$RESULTS"
      step bench-q8-sm120 300 python3 benchmarks/bench_q8.py --emulate-sm120 --out "$RESULTS"
      ;;
    bench-ring)
      step bench-ring 540 python3 -m torch.distributed.run --nproc-per-node "$(nvidia-smi -L | wc -l)" \
        benchmarks/bench_ring.py --out "$RESULTS"
      ;;
    accuracy)
      step accuracy 540 python3 benchmarks/accuracy_fwd.py --grid seed --out "$RESULTS"
      ;;
    bench)
      job bench-fwd
      job bench-bwd
      job bench-decode
      job bench-q8
      job bench-ring
      job accuracy
      ;;
    all)
      job tests
      job sanitize
      job bench
      ;;
    *)
      echo "usage: bash tools/gpu_jobs.sh tests|sanitize|bench-fwd|bench-bwd|bench-decode|bench-q8|bench-ring|accuracy|bench|all" >&2
      exit 2
      ;;
  esac
}

job "${1:-}" "${@:2}"
echo "logs: $LOGS  results: $RESULTS"
exit $failed
