#!/usr/bin/env bash
# The GPU machine's work that is still pending, in the order it pays off, each step under its own
# time limit, everything written under $OUT (the device tool brings that folder back).
# Usage on the GPU machine, from the repository root, with .gpu carried:
#   bash tools/gpu_session.sh tests        # the pending GPU tests (about 4 min)
#   bash tools/gpu_session.sh bench        # cold start, then the SM120-occupancy sweeps (about 8 min)
#   bash tools/gpu_session.sh graph        # CUDA-graph capture diagnosis, one configuration per process
#   bash tools/gpu_session.sh profile      # Nsight Compute of d128 fwd/bwd beside SDPA flash
# Each step prints one summary line; logs and JSON go to $OUT.
set -uo pipefail
source .gpu/setup.sh >/dev/null || exit 1
OUT="${OUT:-/tmp/fa4-out}"
mkdir -p "$OUT"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2
  shift 2
  echo "== $name (limit ${secs}s)"
  timeout "$secs" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$OUT/$name.log" | sed "s/^/   /"
  echo "   rc=$rc"
}
PYTEST_GPU=(python3 -m pytest -m gpu -q -p no:cacheprovider -n 14 --dist loadgroup)

case "${1:-tests}" in
  tests)
    # 1. the gradient tests of the forward issue's seqlen pairs (written after the last GPU run)
    step bwd-pairs 240 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py -k pairs --junitxml="$OUT/bwd-pairs.xml"
    # 2. CUDA-graph capture of forward + backward, alone in one process (it failed inside the suite)
    step graph 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/torch/test_compile_bwd_gpu.py -k cuda_graph
    # 3. the persistent cache on the GPU: cold/warm processes (the .so warm path), numerics included
    step disk-cache 180 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/torch/test_disk_cache_gpu.py
    ;;
  graph)
    # CUDA-graph capture of forward + backward, one configuration per fresh process
    for det in 0 1; do for sink in 0 1; do for mode in global thread_local; do
      step "graph-d$det-s$sink-$mode" 120 python3 tools/graph_diag.py $det $sink $mode
    done; done; done
    ;;
  profile)
    # Nsight Compute: d128 forward (8k, non-causal) and backward (4k), fa4 beside SDPA flash
    NCU=(ncu --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats
         --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
         --section SchedulerStats --section InstructionStats)
    for peer in fa4 sdpa; do
      step "ncu-fwd-$peer" 150 "${NCU[@]}" python3 benchmarks/profile_ncu.py fwd 1 8192 16 128 --peer $peer
      step "ncu-bwd-$peer" 150 "${NCU[@]}" python3 benchmarks/profile_ncu.py bwd 2 4096 16 128 --peer $peer
    done
    ;;
  bench)
    step tune-bwd-emulated 240 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 128 \
      --cands 64,64,128,1 64,64,256,2 64,64,256,4 --emulate-sm120 --out "$OUT"
    # d128 forward: the 8-warp row against 4-warp tiles of 32 rows per warp (half the ldmatrix traffic
    # per MMA; ncu: the 8-warp row is shared-memory bound), SM120 occupancy and H200 occupancy
    step tune-fwd-emulated 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,64,256 128,32,128 128,16,128 --emulate-sm120 --out "$OUT"
    step tune-fwd 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,64,256 128,32,128 128,16,128 --out "$OUT"
    ;;
  *)
    echo "usage: bash tools/gpu_session.sh tests|graph|profile|bench" >&2
    exit 2
    ;;
esac
