#!/usr/bin/env bash
# The GPU machine's work that is still pending, in the order it pays off, each step under its own
# time limit, everything written under $OUT (the device tool brings that folder back).
# Usage on the GPU machine, from the repository root, with .gpu carried:
#   bash tools/gpu_session.sh suite        # the whole GPU test suite (about 6 min)
#   bash tools/gpu_session.sh bench        # forward and backward grids beside the peers (about 10 min)
#   bash tools/gpu_session.sh tune         # the next tile candidates at SM120 occupancy (about 8 min)
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

case "${1:-suite}" in
  suite)
    # the whole GPU suite (about 1,000 tests; the d128 forward row changed after its last full run)
    step suite 480 "${PYTEST_GPU[@]}" tests --junitxml="$OUT/suite.xml"
    ;;
  graph)
    # CUDA-graph capture of forward + backward, one configuration per fresh process
    for det in 0 1; do for sink in 0 1; do
      step "graph-d$det-s$sink" 120 python3 tools/graph_diag.py $det $sink global
    done; done
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
    # the issue-7 figures beside the peers: forward seed + anchor grids, backward grid
    step bench-fwd 420 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_fwd.py --grid seed anchor --out "$OUT"
    step bench-bwd 300 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py --out "$OUT"
    ;;
  tune)
    # next candidates, SM120 occupancy emulated (each spill-free on sm_120a, CPU ptxas 2026-12-01):
    # d96 forward on 4 warps of 32 rows; the 2 x 2 warp split of the backward for d64 and d96 (for
    # d128 it measured +3.6% / +5.0%; adopting it there needs the suite on the changed table)
    step tune-fwd-d96 240 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 96 \
      --cands 128,64,256 128,64,128 128,32,128 --emulate-sm120 --out "$OUT"
    step tune-bwd 240 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 64 96 \
      --cands 64,128,256,2 64,64,128,1 64,64,128,2 --emulate-sm120 --out "$OUT"
    # d160's backward row spills 128 B on sm_120a; 64x32 over 2 x 2 warps does not (224 registers)
    step tune-bwd-d160 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 160 \
      --cands 64,64,128,1 64,32,128,2 --emulate-sm120 --out "$OUT/d160"
    ;;
  *)
    echo "usage: bash tools/gpu_session.sh suite|graph|profile|bench|tune" >&2
    exit 2
    ;;
esac
