#!/usr/bin/env bash
# The GPU machine's work that is still pending, in the order it pays off, each step under its own
# time limit, everything written under $OUT (the device tool brings that folder back).
# Usage on the GPU machine, from the repository root, with .gpu carried:
#   bash tools/gpu_session.sh suite        # the whole GPU test suite but the candidates (about 6 min)
#   bash tools/gpu_session.sh bench        # forward grids beside the peers (about 8 min)
#   bash tools/gpu_session.sh bench2       # backward grid and decode beside the peers (about 8 min)
#   bash tools/gpu_session.sh tune         # backward candidates: checked, then timed at SM120 occupancy
#   bash tools/gpu_session.sh adopt        # (2026-12-02) the tuned table's backward tests, then d64/d96/d160 with v
#   bash tools/gpu_session.sh adopt2       # (2026-12-02) backward tests, backward grid, v on 192/192 and 256
#   bash tools/gpu_session.sh lpt          # (2026-12-02) causal longest-first against the plain grid, then tests
#   bash tools/gpu_session.sh tune3        # next: forward d64 8 warps, backward 192/192 32x32, d64 longest-first
#   bash tools/gpu_session.sh diag         # causal backward: bench vs queued vs kernel time; L2 budgets
#   bash tools/gpu_session.sh next         # decode split sweep, backward grid, backward host time
#   bash tools/gpu_session.sh next8        # (next) the batch-1 decode host floor, backward host time
#   bash tools/gpu_session.sh tune4        # (next) 64-row tiles for every d64/d96/d128 call: tests, timing
#   bash tools/gpu_session.sh s8a          # (session 8) causal 64-row tiles for d64/96/160/192, tests not run in s7
#   bash tools/gpu_session.sh s8b          # (session 8) forward tests + anchor grid on the retuned causal rows
#   bash tools/gpu_session.sh s9a          # (session 9) forward tests with the knobs; d128 rows with/without them
#   bash tools/gpu_session.sh s9b          # (session 9) serving tests, d64 knobs, anchor grid
#   bash tools/gpu_session.sh s9c          # (session 9) d64 knobs one by one, seed grid, random configurations
#   bash tools/gpu_session.sh s9d          # (session 9) threshold without the opaque addresses, d128 and d64
#   bash tools/gpu_session.sh s9e          # (session 9) the shipped build's forward tests (rescale paths, ...)
#   bash tools/gpu_session.sh next10       # (next) softmax reductions as trees: docs-example GPU test, d128/d64 timing
#   bash tools/gpu_session.sh next10b      # (next) SASS opcodes of the forward rows' loops; ncu stall reasons
#   bash tools/gpu_session.sh next10c      # (next) backward 192/192 with and without the opaque addresses
#   bash tools/gpu_session.sh s10b         # forward grids (anchor + seed) after a parallel disk-cache warm-up
#   bash tools/gpu_session.sh s11b         # (session 11) SASS of the forward loops, ncu stall reasons (d128, d64)
#   bash tools/gpu_session.sh s12a         # (session 12) backward suite, alternatives and sanitizers with the new d64/d128 rows
#   bash tools/gpu_session.sh s12b         # (session 12) backward grid, compat and SM120 occupancy
#   bash tools/gpu_session.sh s12d         # (session 12) disk cache and CUDA-graph capture with the new backward rows
#   bash tools/gpu_session.sh s13a         # (session 13) forward ablations (softmax, loads), short decode, seed recheck
#   bash tools/gpu_session.sh s13b         # (session 13) KV-cache memo: GPU tests, host time, decode benchmark
#   bash tools/gpu_session.sh s13c         # (session 13) the 8-10 µs seed shapes: packing, few-tile rule, kernel time
#   bash tools/gpu_session.sh s13d         # (session 13) V waited for before P·V: tests, timing; decode splits on graphs
#   bash tools/gpu_session.sh s14a         # (session 14) late V wait + 128-key decode splits: GPU suite, forward sanitizers
#   bash tools/gpu_session.sh s14b         # (session 14) forward grids (anchor + seed) with the new defaults
#   bash tools/gpu_session.sh s14c         # (session 14) anchor grid at SM120 occupancy, decode splits on graphs, decode
#   bash tools/gpu_session.sh s14d         # (session 14) late against early V wait on the rows not timed (d64c, d96, d192, d256)
#   bash tools/gpu_session.sh s14e         # (session 14) Nsight Compute of a 9 µs seed shape, fa4 beside SDPA flash
#   bash tools/gpu_session.sh s12c         # (session 12) d64 velsr / d128 vlkr tests and timing, decode benchmark
#   bash tools/gpu_session.sh next11       # (next) d64 backward with S/dP on the transposed warp grid: tests, timing
#   bash tools/gpu_session.sh next11b      # (next) d128 backward, S/dP along the keys + V in registers: timing
#   bash tools/gpu_session.sh s11d         # (session 11) backward grid in compat mode, backward alone, 3 peers
#   bash tools/gpu_session.sh s11a         # (session 11) anchor and backward grids with fa4 and upstream at SM120's CTAs/SM
#   bash tools/gpu_session.sh tune2        # d96 forward/backward and d160 backward candidates
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
warm_fwd_grids() {  # fa4's disk cache filled for the forward grids' heads in 8 parallel processes
  for d in 64 128; do for dt in bf16 fp16; do for c in yes no; do
    timeout 200 python3 -m fa4_torch warmup --shapes 16,16,$d 16,8,$d 16,1,$d 32,8,$d --dtype $dt \
      --causal $c >"$OUT/warm-$d-$dt-$c.log" 2>&1 &
  done; done; done
  wait
  tail -qn 1 "$OUT"/warm-*.log | head -8
}
PYTEST_GPU=(python3 -m pytest -m gpu -q -p no:cacheprovider -n 14 --dist loadgroup)
# ncu: the stall reasons two ways (one may not exist in a given ncu): the sections' details, and the
# explicit per-reason metrics with the share of lanes predicated on
STALLS=(ncu --profile-from-start off --section WarpStateStats --section InstructionStats --print-details all)
M=smsp__average_warps_issue_stalled
METRICS=$(printf "${M}_%s_per_issue_active.ratio," barrier branch_resolving dispatch_stall drain \
  lg_throttle long_scoreboard math_pipe_throttle membar mio_throttle misc no_instruction not_selected \
  selected short_scoreboard sleeping tex_throttle wait)smsp__thread_inst_executed_pred_on_per_inst_executed.ratio

case "${1:-suite}" in
  suite)
    # the whole GPU suite but the candidate rows (test_bwd_alt_rows runs in `tune`)
    step suite 480 "${PYTEST_GPU[@]}" tests -k "not alt_rows" --junitxml="$OUT/suite.xml"
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
         --section MemoryWorkloadAnalysis_Tables --section SchedulerStats --section InstructionStats)
    for peer in fa4 sdpa; do
      step "ncu-fwd-$peer" 150 "${NCU[@]}" python3 benchmarks/profile_ncu.py fwd 1 8192 16 128 --peer $peer
      step "ncu-bwd-$peer" 150 "${NCU[@]}" python3 benchmarks/profile_ncu.py bwd 2 4096 16 128 --peer $peer
    done
    ;;
  bench)
    # the issue-7 forward figures beside the peers: seed + anchor grids, host time, peak memory
    step bench-fwd 540 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_fwd.py --grid seed anchor --out "$OUT"
    ;;
  bench2)
    # backward grid (and its peak memory), then decode (contiguous and paged K/V)
    step bench-bwd 330 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py --out "$OUT"
    step bench-decode 220 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_decode.py --out "$OUT"
    ;;
  tune)
    # the backward candidates first checked (test_bwd_alt_rows: every candidate row against the fp32
    # reference, dense and packed/seqused, deterministic), then timed at SM120 occupancy. Candidate
    # flags: "v" = dQ as red.global.add.v2.f32 (half the reductions, whole sectors), "e" = early Q/dO
    # loads (two cp.async groups, dK before dV). 32x128 on 8 warps (2 x 4) halves the Q/dO reloads and
    # dQ reductions per key. The reason: fa4's main backward kernel keeps L2 65% busy for 5.59 ms
    # where FA2's is 21% for 2.90 ms (d128, ncu 2026-12-01). All spill-free on sm_120a.
    step alt-rows 140 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py -k alt_rows --junitxml="$OUT/alt.xml"
    step tune-bwd-d128 220 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 128 \
      --cands 64,64,128,1 64,64,128,1,v 64,64,128,1,ve 32,128,256,4 32,128,256,4,ve \
      --emulate-sm120 --out "$OUT/d128"
    step tune-bwd-d64 150 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 64 \
      --cands 64,128,256,2 64,128,256,2,v 32,128,256,4,ve --emulate-sm120 --out "$OUT/d64"
    ;;
  adopt)
    # the table with the winners of `tune` (d128 32x128 on 8 warps with v+e, every other row with v):
    # the backward's GPU tests (and the forward's window/softcap/sink ones: softcap d128 calls changed row) on it, then
    # the rows not timed yet with v: d64 +e, d96, d160 and 192/128 (4-warp against 4 x 2 warps)
    step bwd-suite 290 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_compile_bwd_gpu.py \
      tests/torch/test_transformers_gpu.py tests/torch/test_serving_gpu.py::test_window_softcap_sink -k "not alt_rows" \
      --junitxml="$OUT/bwd-suite.xml"
    step tune-bwd-d64 60 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 64 \
      --cands 64,128,256,2,v 64,128,256,2,ve --emulate-sm120 --out "$OUT/d64"
    step tune-bwd-d96 70 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 96 \
      --cands 64,64,128,1,v 64,64,128,1,ve 64,64,128,2,v --emulate-sm120 --out "$OUT/d96"
    step tune-bwd-d160 120 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 160 192:128 \
      --cands 64,64,128,1,v 64,64,256,2,v 64,64,256,2,ve --emulate-sm120 --out "$OUT/d160"
    ;;
  adopt2)
    # the table with the winners of `adopt` too (d96 2 x 2, d160 and 192/128 4 x 2, all with v): the
    # backward's GPU tests, the backward grid with the large head dims beside the peers, then v against
    # scalar dQ reductions on the 2 x 2-warp rows of 192/192 and 256
    step bwd-suite 180 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_compile_bwd_gpu.py \
      -k "not alt_rows" --junitxml="$OUT/bwd-suite.xml"
    step bench-bwd 320 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py --grid main large-d --out "$OUT"
    step tune-bwd-d256 40 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 256 \
      --cands 32,32,128,2,v 32,32,128,2 --causal no --emulate-sm120 --out "$OUT/d256"
    step tune-bwd-d192 40 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 192 \
      --cands 64,32,128,2,v 64,32,128,2 --causal no --emulate-sm120 --out "$OUT/d192"
    ;;
  lpt)
    # causal backward on the longest-first 1-D grid (BwdTile.longest_first, on in every row): timed
    # against the (key block, head, batch) grid on d128, then the backward's GPU tests with it
    # (the candidate rows too: those without "l" keep the plain grid for their causal cases)
    step tune-lpt-d128 45 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 128 \
      --cands 32,128,256,4,ve 32,128,256,4,vel --causal yes --emulate-sm120 --out "$OUT/d128"
    step bwd-suite 170 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_compile_bwd_gpu.py \
      --junitxml="$OUT/bwd-suite.xml"
    ;;
  tune3)
    # next: the candidates prepared on the CPU in session 5, checked, then timed. Forward d64 on 8 warps
    # (spill-free where the 4-warp row spills in windows/softcap/causal varlen); backward 192/192 on
    # 32x32 (spill-free where the 64x32 row's plain non-causal build spills 8 B); longest-first on d64
    step alt-rows 200 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_fwd_gpu.py \
      -k "alt_rows" --junitxml="$OUT/alt.xml"
    step tune-fwd-d64 120 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128 128,64,256 --emulate-sm120 --out "$OUT"
    step tune-bwd-d192 60 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 192 \
      --cands 64,32,128,2,vl 32,32,128,2,vl --emulate-sm120 --out "$OUT/d192"
    step tune-bwd-d64 40 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 64 \
      --cands 64,128,256,2,v 64,128,256,2,vl --causal yes --emulate-sm120 --out "$OUT/d64"
    ;;
  diag)
    # (2026-12-02, session 6) where a causal backward's time goes (bench vs queued vs kernel time),
    # and the longest-first groups with larger L2 budgets (GQA 1 x 8192 gets groups of one pair)
    step bwd-diag 300 python3 tools/bwd_diag.py --out "$OUT" --budgets 64 100000
    ;;
  diag2)
    # (session 6) the backward's GPU tests with the longest-first groups of >= 4 waves, its host side
    # (cProfile), then the diagnosis shapes again
    step bwd-suite 200 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_compile_bwd_gpu.py \
      -k "not alt_rows" --junitxml="$OUT/bwd-suite.xml"
    step bwd-diag 150 python3 tools/bwd_diag.py --out "$OUT" --host
    ;;
  s6tests)
    # (session 6) the backward's GPU tests (host path trimmed: one semaphore stand-in per device, one
    # LSE/dPsum buffer), the serving tests (decode on the 64-row small-m rows: split-KV, paged,
    # windows/softcap/sinks) and the CUDA-graph decode step
    step bwd-suite 200 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_compile_bwd_gpu.py \
      -k "not alt_rows" --junitxml="$OUT/bwd-suite.xml"
    step serving 160 "${PYTEST_GPU[@]}" tests/torch/test_serving_gpu.py tests/torch/test_compile_graph_gpu.py \
      --junitxml="$OUT/serving.xml"
    ;;
  s6)
    # (session 6, one call) s6tests, then the decode benchmark
    bash "$0" s6tests
    step bench-decode 110 env FA4_BENCH_REP_MS=20 python3 benchmarks/bench_decode.py --out "$OUT"
    ;;
  s6bench)
    # (session 6) decode with the small-m rows, then the backward grid (GQA longest-first groups)
    step bench-decode 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_decode.py --out "$OUT"
    step bench-bwd 300 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py --out "$OUT"
    ;;
  next)
    # (prepared in session 6 for the next GPU session) the decode split sweep (whole waves against the
    # heuristic), the backward grid with the GQA-aware longest-first groups, the trimmed backward
    # host path (bwd_diag --host), then the forward grids (not re-run since session 3)
    step decode-splits 150 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --paged --out "$OUT"
    step bench-bwd 250 env FA4_BENCH_REP_MS=20 python3 benchmarks/bench_bwd.py --out "$OUT"
    step bwd-diag 90 python3 tools/bwd_diag.py --host --out "$OUT"
    ;;
  s7a)
    # (session 7) the forward's GPU tests on every small-m decode row (d32-192; only d128 had run),
    # the other small-seqlen and head-dim cases, the decode split sweep, the backward host time
    step fwd-small-m 180 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py \
      -k "small_m or head_dims or seqlen_pairs" --junitxml="$OUT/fwd-small-m.xml"
    step decode-splits 150 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --paged --out "$OUT"
    step bwd-diag 90 python3 tools/bwd_diag.py --host --out "$OUT"
    ;;
  s7b)
    # (session 7) whole-wave split heuristic and paged K/V pages looked up a stage ahead: the serving
    # and CUDA-graph tests, the small-m forward tests, the split sweep (decode, few-tile prefill), decode
    step serving 200 "${PYTEST_GPU[@]}" tests/torch/test_serving_gpu.py tests/torch/test_compile_graph_gpu.py \
      --junitxml="$OUT/serving.xml"
    step fwd-small-m 90 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py -k "small_m or seqlen_pairs" \
      --junitxml="$OUT/fwd-small-m.xml"
    step decode-splits 120 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --paged --prefill --out "$OUT"
    step bench-decode 170 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_decode.py --out "$OUT"
    ;;
  s7c)
    # (session 7) small-m rows for few-tile calls too (fewer 128-row tiles than SMs): the forward's
    # GPU tests (the seed grid's one-wave shapes now take them), the rule on against off beside SDPA
    # flash, then the backward's tests (its forward takes the same rows)
    step fwd-tests 200 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py -k "not alt_rows" --junitxml="$OUT/fwd.xml"
    step few-tile 90 env FA4_BENCH_REP_MS=30 python3 tools/few_tile_fwd.py --out "$OUT"
    step bwd-tests 220 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_random_gpu.py -k "not alt_rows" \
      --junitxml="$OUT/bwd.xml"
    ;;
  next8)
    # (prepared in session 7 for the next GPU session) the batch-1/8 decode host floor (host, queued and
    # kernel time), then the backward grid's host-bound shapes again
    step decode-b1 90 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_decode.py --batch 1 8 --out "$OUT"
    step decode-host 90 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --host --out "$OUT"
    step bwd-diag 120 python3 tools/bwd_diag.py --host --out "$OUT"
    ;;
  tune4)
    # (prepared in session 7) the 64-row small-m tiles for every call of d64/d96/d128, which won all 14
    # one-wave shapes (tools/few_tile_fwd.py): checked against the fp32 reference, then timed against the
    # table's rows on the anchor shapes at SM120 occupancy. All spill-free on sm_120a in every feature
    # variant (the d64 4-warp 128x64 row spills 8-44 B in windows/softcap/varlen)
    step alt-rows 150 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py -k "alt_rows" --junitxml="$OUT/alt.xml"
    step tune-fwd-d128 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,32,128 64,64,128 --causal no --emulate-sm120 --out "$OUT/d128n"
    step tune-fwd-d128c 150 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,64,256 64,64,128 --causal yes --emulate-sm120 --out "$OUT/d128c"
    step tune-fwd-d64 110 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128 64,128,128 --emulate-sm120 --out "$OUT/d64"
    step tune-fwd-d96 110 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 96 \
      --cands 128,64,256 64,64,128 --emulate-sm120 --out "$OUT/d96"
    ;;
  s8a)
    # (session 8) causal calls on the 64-row tiles for the other head dims (d128 causal won by 8% in
    # tune4 and is in the table; d96 causal won pass 1 by 7.6%), then the GPU tests not run in session 7:
    # paged K/V at the other head dims, the warmup of both rows from the disk cache, sanitizer
    step tune-fwd-d96c 80 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 96 \
      --cands 128,64,256 64,64,128 --causal yes --emulate-sm120 --out "$OUT/d96c"
    step tune-fwd-d64c 80 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128 64,128,128 --causal yes --emulate-sm120 --out "$OUT/d64c"
    step tune-fwd-d160c 90 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 160 \
      --cands 128,64,256 64,64,128 --causal yes --emulate-sm120 --out "$OUT/d160c"
    step tune-fwd-d192c 90 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 192 \
      --cands 128,64,256 64,64,128 --causal yes --emulate-sm120 --out "$OUT/d192c"
    step tests-s8 130 "${PYTEST_GPU[@]}" tests/torch/test_serving_gpu.py::test_paged_head_dims \
      tests/torch/test_disk_cache_gpu.py::test_warmup_command_fills_the_cache_for_the_model_process \
      --junitxml="$OUT/tests-s8.xml"
    step sanitize 100 "${PYTEST_GPU[@]}" tests/torch/test_sanitize_gpu.py --junitxml="$OUT/sanitize.xml"
    ;;
  s8b)
    # (session 8) the table with causal d96/d128 on the 64-row tiles: the forward's GPU tests, the
    # anchor grid beside the peers, then the compile and transformers tests (not run in session 7)
    step fwd-tests 200 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py -k "not alt_rows"
    step bench-fwd 220 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_fwd.py --grid anchor --out "$OUT"
    step tests-rest 120 "${PYTEST_GPU[@]}" tests/torch/test_compile_bwd_gpu.py tests/torch/test_transformers_gpu.py \
      tests/torch/test_serving_gpu.py::test_window_softcap_sink
    ;;
  s9a)
    # (session 9) the forward with O rescaled only when a row max grows by > 2^8 and ldmatrix addresses
    # re-derived per key block (fa4_sm120.fwd knobs): its GPU tests (test_online_softmax_rescale_paths
    # forces both paths), then the d128 rows timed with and without the knobs (letters: r = rescale on
    # every new max, o = opaque addresses; r = the session-8 build), and the 4-warp row in one P·V pass
    step fwd-tests 200 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py -k "not alt_rows" --junitxml="$OUT/fwd.xml"
    step tune-d128n 220 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,32,128,r 128,32,128,o 128,32,128,ro 128,32,128,os 128,64,256,o --causal no --emulate-sm120 --out "$OUT/d128n"
    step tune-d128c 120 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 64,64,128,r 64,64,128,o 64,64,128,ro --causal yes --emulate-sm120 --out "$OUT/d128c"
    ;;
  s9b)
    # (session 9) the serving tests on the new forward (split-KV, paged, decode rows), the d64 rows with
    # and without the knobs, then the anchor grid beside the peers
    step serving 200 "${PYTEST_GPU[@]}" tests/torch/test_serving_gpu.py --junitxml="$OUT/serving.xml"
    step tune-d64 130 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128,r 128,64,128,o --emulate-sm120 --out "$OUT/d64"
    step bench-fwd 230 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_fwd.py --grid anchor --out "$OUT"
    ;;
  s9c)
    # (session 9) which knob costs d64 non-causal its 2% (s9b: rh 282.0/281.4 against 276.6/275.7), the
    # seed grid beside the peers, then the random configurations on the new forward
    step tune-d64n 100 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128,r 128,64,128,o 128,64,128,ro 128,64,128 --causal no --emulate-sm120 --out "$OUT/d64n"
    step bench-seed 330 env FA4_BENCH_REP_MS=20 python3 benchmarks/bench_fwd.py --grid seed --out "$OUT"
    step random 140 "${PYTEST_GPU[@]}" tests/torch/test_random_gpu.py --junitxml="$OUT/random.xml"
    ;;
  s9d)
    # (session 9) the knobs one at a time where they matter: d128 and d64 non-causal with the rescale
    # threshold and hoisted addresses (now the default) against both (o) and neither (r)
    step tune-d128n-h 170 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,32,128,o 128,32,128 --causal no --emulate-sm120 --out "$OUT/d128n-h"
    step tune-d64n-h 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128,o 128,64,128 128,64,128,r --causal no --emulate-sm120 --out "$OUT/d64n-h"
    ;;
  s9e)
    # (session 9) the shipped build (rescale threshold on, hoisted addresses): the forward tests that
    # exercise the rescale paths, every head dim, the awkward lengths, windows and GQA packing
    step fwd-tests 150 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py \
      -k "rescale or head_dims or seqlen_pairs or windows or gqa_pack" --junitxml="$OUT/fwd.xml"
    ;;
  next9)
    # (prepared in session 9 for the next GPU session) with the rescale threshold the 4-warp 128x32 d128
    # build spills nowhere on sm_120a (causal, windows, split-KV, softcap, paged, varlen: 248-255
    # registers): check it for every call (alt rows), the new rescale cases (192/128, 256) and the
    # dv < 128 rows on the exact rescale path (seed grid d64, head dims: s9a ran them with the
    # threshold, before RESCALE_MIN_DV), then time
    # it for causal against the 64x64 row and with the Q·Kᵀ prefetch (p, spill-free now) for plain
    # calls. Then `bench` (seed + anchor on a warm machine; the session-9 seed run was cut at 215 shapes)
    step alt-rows 150 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py \
      -k "alt_rows and (128x32x128 or 128x64x128) or rescale or seed_grid or head_dims" --junitxml="$OUT/alt.xml"
    step tune-d128c 100 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 64,64,128 128,32,128 --causal yes --emulate-sm120 --out "$OUT/d128c"
    step tune-d128n 100 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,32,128 128,32,128,p --causal no --emulate-sm120 --out "$OUT/d128n"
    # d96 non-causal ran at 241.7 TFLOP/s on the 8-warp row (session 8) where d128 runs 329 on 4 warps
    # of 32 rows: the 4-warp forms (spill-free plain builds: 128x64 255 registers, 128x32 230 with t)
    step tune-d96n 220 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 96 \
      --cands 128,64,256 128,64,256,t 128,64,128 128,64,128,t 128,32,128,t --causal no --emulate-sm120 \
      --out "$OUT/d96n"
    ;;
  tune2)
    # d96: forward on 4 warps of 32 rows (non-causal plain calls, as d128's 4-warp row), backward 2 x 2
    # and the flags; d160 and 192/128: the spilling 4-warp 64x64 rows (128-496 B) against 64x64 over
    # 4 x 2 warps (spill-free in every feature set) and 64x32 over 2 x 2
    step tune-fwd-d96 150 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 96 \
      --cands 128,64,256 128,64,128 128,32,128 --causal no --emulate-sm120 --out "$OUT"
    step tune-bwd-d96 130 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 96 \
      --cands 64,64,128,1 64,64,128,2 64,64,128,1,ve --emulate-sm120 --out "$OUT/d96"
    step tune-bwd-d160 150 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 160 192:128 \
      --cands 64,64,128,1 64,64,256,2 64,64,256,2,ve 64,32,128,2 --causal no --emulate-sm120 --out "$OUT/d160"
    ;;
  s10a)
    # (session 10) d96 non-causal plain calls on 4 warps of 32 rows with the lazy rescale (the new table
    # row: alt rows, rescale cases, every head dim, the docs example's threshold configs), causal d96 with
    # the lazy rescale (t) against without, then Nsight Compute of the d64 forward where upstream's
    # 128x128 tile leads (4x1024x16, non-causal: 0.886x in s9b) and of the d128 4-warp row
    step fwd96 150 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py tests/sm120/test_docs_example.py \
      -k "alt_rows and 128x64x128 or rescale or head_dims or toy_kernel" --junitxml="$OUT/fwd96.xml"
    step tune-d96c 110 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 96 \
      --cands 64,64,128 64,64,128,t --causal yes --emulate-sm120 --out "$OUT/d96c"
    NCU=(ncu --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats
         --section WarpStateStats --section ComputeWorkloadAnalysis --section InstructionStats
         --section SchedulerStats --section MemoryWorkloadAnalysis)
    for peer in fa4 upstream; do
      step "ncu-fwd-d64-$peer" 90 "${NCU[@]}" python3 benchmarks/profile_ncu.py fwd 4 1024 16 64 --peer $peer
    done
    step ncu-fwd-d128-fa4 90 "${NCU[@]}" python3 benchmarks/profile_ncu.py fwd 1 8192 16 128
    ;;
  s10b|s14b)
    # (sessions 10, 14) the forward grids with the peers timed in interleaved rounds (bench_peers): first fa4's
    # disk cache filled for the grids' heads in 8 parallel processes (compiles only), so the timed
    # process loads its kernels instead of compiling them one by one
    warm_fwd_grids
    step bench-fwd 420 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_fwd.py --grid anchor seed --out "$OUT"
    ;;
  s10c)
    # (session 10) the dense-call memo (a repeated dense call skips the validation): its GPU test, the
    # forward suite (every repeated shape takes the memo) and the random configurations; then the host
    # time of a cached call, fa4 with and without the memo beside SDPA flash and upstream
    step host 90 python3 tools/host_time.py --out "$OUT"
    step fwd-tests 250 "${PYTEST_GPU[@]}" tests/torch/test_fwd_gpu.py tests/torch/test_dense_memo.py \
      tests/torch/test_random_gpu.py -k "not alt_rows" --junitxml="$OUT/fwd.xml"
    ;;
  s10d)
    # (session 10) s10c cut to the budget left after a lost machine: the host time, then the memo's GPU
    # test and the forward cases that repeat shapes most (seed grid, head dims, windows, GQA packing)
    step host 70 python3 tools/host_time.py --out "$OUT"
    step fwd-tests 140 "${PYTEST_GPU[@]}" tests/torch/test_dense_memo.py tests/torch/test_fwd_gpu.py \
      -k "memo or seed_grid or head_dims or windows or gqa_pack" --junitxml="$OUT/fwd.xml"
    ;;
  next10)
    # (prepared in session 10 for the next GPU session) the softmax's row max and sum as pairwise trees
    # (fwd.TREE_REDUCE, letter x; the PTX with it off is identical to before): the docs example's tree
    # configs on the GPU, then d128 and d64 non-causal timed with and without it (ncu: 36% of the d128
    # row's issue gaps are fixed-latency dependencies). Then `s10b` for the grids with the dense-call
    # memo (the seed grid's small shapes were host-bound in session 10's run, before the memo)
    step toy 100 "${PYTEST_GPU[@]}" tests/sm120/test_docs_example.py --junitxml="$OUT/toy.xml"
    step tune-d128n 110 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --cands 128,32,128 128,32,128,x --causal no --emulate-sm120 --out "$OUT/d128n"
    step tune-d64n 110 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128 128,64,128,x 128,64,128,xt --causal no --emulate-sm120 --out "$OUT/d64n"
    step tune-d64c 110 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --cands 128,64,128 128,64,128,x --causal yes --emulate-sm120 --out "$OUT/d64c"
    ;;
  next10b)
    # (prepared in session 10) what the 36% fixed-latency stalls and 25% predicated-off lanes of session
    # 10's profile are: the stall reasons of the d128 and d64 rows (and upstream's d64) and the SASS
    # opcodes of their loops (tools/sass_dump.py: ptxas + cuobjdump, which the CPU machine lacks)
    step sass 120 python3 tools/sass_dump.py --out "$OUT/sass"
    step ncu-stalls-d128 90 "${STALLS[@]}" python3 benchmarks/profile_ncu.py fwd 1 8192 16 128
    for peer in fa4 upstream; do
      step "ncu-stalls-d64-$peer" 90 "${STALLS[@]}" python3 benchmarks/profile_ncu.py fwd 4 1024 16 64 --peer $peer
    done
    step ncu-metrics-d128 90 ncu --profile-from-start off --metrics "$METRICS" \
      python3 benchmarks/profile_ncu.py fwd 1 8192 16 128
    ;;
  next10c)
    # (prepared in session 10) the backward's opaque ldmatrix addresses (bwd.OPAQUE_SMEM, off): on
    # sm_120a they remove the 8 B spill of the 192/192 non-causal row; timed here on and off, each in a
    # fresh process with its own disk cache (the knob is not in the cache key)
    for opaque in False True; do
      step "tune-bwd-d192-opaque-$opaque" 150 env FA4_BENCH_REP_MS=30 FA4_CACHE_DIR="$OUT/cache-$opaque" \
        python3 -c "import runpy, sys; import fa4_sm120.bwd as b; b.OPAQUE_SMEM = $opaque; \
sys.argv = ['tune_bwd.py', '--head-dim', '192', '--cands', '64,32,128,2,v', '--causal', 'no', '--emulate-sm120', \
'--out', '$OUT/bwd192-$opaque']; runpy.run_path('benchmarks/tune_bwd.py', run_name='__main__')"
    done
    rm -rf "$OUT"/cache-*
    ;;
  s11a)
    # (session 11) what SM120 would run: fa4's and upstream's kernels launched at SM120's CTAs per SM
    # (benchmarks/_common.emulate_sm120; compat mode co-schedules two of upstream's 64-80 KB 4-warp CTAs
    # per SM where SM120 runs one), SDPA as it is; the anchor grid, then the backward grid (backward
    # alone, fa4 / SDPA flash / upstream)
    step bench-fwd-emu 300 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_fwd.py --grid anchor \
      --emulate-sm120 --out "$OUT"
    step bench-bwd-emu 260 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py --emulate-sm120 \
      --peers fa4 sdpa_flash fa4_upstream_sm120 --no-fwdbwd --out "$OUT"
    ;;
  s11b)
    # (session 11) next10b cut to the budget left: the SASS of the forward rows' loops, the stall reasons
    # of the d128 row (section details and the explicit metrics) and of the d64 row
    step sass 120 python3 tools/sass_dump.py --out "$OUT/sass"
    step ncu-stalls-d128 90 "${STALLS[@]}" python3 benchmarks/profile_ncu.py fwd 1 8192 16 128
    step ncu-metrics-d128 90 ncu --profile-from-start off --metrics "$METRICS" \
      python3 benchmarks/profile_ncu.py fwd 1 8192 16 128
    step ncu-stalls-d64-fa4 80 "${STALLS[@]}" python3 benchmarks/profile_ncu.py fwd 4 1024 16 64
    ;;
  s11d)
    # (session 11) the backward grid in compat mode with the interleaved rounds (backward alone, fa4 /
    # SDPA flash / upstream): the compat figure beside s11a's SM120-occupancy one
    step bench-bwd 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py \
      --peers fa4 sdpa_flash fa4_upstream_sm120 --no-fwdbwd --out "$OUT"
    ;;
  next11)
    # (prepared in session 11 for the next GPU session) the d64 backward with S and dP on the transposed
    # warp grid (candidate letter s: 2x4 warps for S/dP, 4x2 for dK/dV/dQ; tools/bwd_smem_model.py:
    # 13.3 -> 14.6 FLOP per ldmatrix byte; sm_120a 224-246 registers, no spills in any feature set),
    # and with V's dP fragments in registers too (r: 14.6 -> 16.0; 217-255 registers, no spills):
    # its GPU tests (alt rows incl. sink, softcap + window, varlen/seqused, deterministic), then timed
    # beside the shipped row at SM120 occupancy
    step bwd-alt-s 300 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py -k "alt_rows and (vls or velkr)" \
      --junitxml="$OUT/bwd-alt-s.xml"
    step tune-bwd-d64-s 300 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 64 \
      --cands 64,128,256,2,vl 64,128,256,2,vls 64,128,256,2,vlsr --emulate-sm120 --out "$OUT/bwd64"
    ;;
  next11b)
    # (prepared in session 11) d128 backward with S/dP on 1x8 warps and V's dP fragments in registers
    # (candidate k + r: 32 registers of V per thread; model 13.3 -> 14.6 FLOP per ldmatrix byte; sm_120a
    # plain, causal and local builds 246-247 registers without spills, some feature builds spill 8-104 B)
    step tune-bwd-d128-kr 300 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 128 \
      --cands 32,128,256,4,vel 32,128,256,4,velkr --emulate-sm120 --out "$OUT/bwd128"
    ;;
  s12a)
    # (session 12) the table with d64 on S/dP 2x4 + V in registers and d128 on S/dP 1x8 + V in registers
    # (plain, causal and window calls): the backward's GPU suite, the former d64 row and the new rows'
    # sink and softcap + window cases as alternatives, then memcheck and racecheck of the d64/d128 launches
    step bwd-suite 330 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py tests/torch/test_compile_bwd_gpu.py \
      tests/torch/test_random_gpu.py tests/torch/test_transformers_gpu.py \
      tests/torch/test_serving_gpu.py::test_window_softcap_sink -k "not alt_rows" --junitxml="$OUT/bwd-suite.xml"
    step bwd-alt 110 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py -k "alt_rows and (x2-vl- or velkr or vlsr)" \
      --junitxml="$OUT/bwd-alt.xml"
    step sanitize-bwd 150 env SANITIZE_K="backward and (d64 or d128)" bash tools/sanitize.sh memcheck racecheck
    ;;
  s12b)
    # (session 12) the backward grid with the new rows, backward alone beside SDPA flash and upstream:
    # compat mode, then at SM120's CTAs per SM
    step bench-bwd 220 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py \
      --peers fa4 sdpa_flash fa4_upstream_sm120 --no-fwdbwd --out "$OUT"
    step bench-bwd-emu 260 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_bwd.py --emulate-sm120 \
      --peers fa4 sdpa_flash fa4_upstream_sm120 --no-fwdbwd --out "$OUT"
    ;;
  s12c)
    # (session 12) the new rows' neighbours: d64 with early Q/dO loads (velsr), d128 without (vlkr), their
    # GPU tests then timed beside the rows at SM120 occupancy; then the decode benchmark's interleaved
    # rounds (never run on a GPU before)
    step bwd-alt-e 120 "${PYTEST_GPU[@]}" tests/torch/test_bwd_gpu.py -k "alt_rows and (velsr or vlkr)" \
      --junitxml="$OUT/bwd-alt-e.xml"
    step tune-bwd-d64-e 170 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 64 \
      --cands 64,128,256,2,vlsr 64,128,256,2,velsr --emulate-sm120 --out "$OUT/bwd64"
    step tune-bwd-d128-e 130 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_bwd.py --head-dim 128 \
      --cands 32,128,256,4,velkr 32,128,256,4,vlkr --emulate-sm120 --out "$OUT/bwd128"
    step bench-decode 170 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_decode.py --out "$OUT"
    ;;
  s12d)
    # (session 12) the new backward rows through the disk cache (a fresh process loads what another
    # compiled) and CUDA-graph capture of forward + backward (d64 causal: the new row, and with the
    # sink gradient and determinism the former one)
    step disk-cache 150 "${PYTEST_GPU[@]}" tests/torch/test_disk_cache_gpu.py --junitxml="$OUT/disk-cache.xml"
    step graph-d0-s0 100 python3 tools/graph_diag.py 0 0 global
    step graph-d1-s1 100 python3 tools/graph_diag.py 1 1 global
    ;;
  s13a)
    # (session 13) what bounds the forward and the short decode: the d128 and d64 non-causal rows with
    # the online softmax removed (A), the main loop's K/V loads removed (L) and both, at SM120 occupancy;
    # the short-cache decode's kernels and host time, and its split counts (contiguous and page-64);
    # session 11's seed-grid shapes under SDPA flash, three independent repeats each
    step tune-abl-d128 300 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --causal no --cands 128,32,128 128,32,128,A 128,32,128,L 128,32,128,AL --emulate-sm120 --out "$OUT/abl128"
    step decode-host 90 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --host --out "$OUT"
    step decode-splits 200 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --paged --out "$OUT" \
      --shapes 1:1024 1:2048 1:4096 1:8192 8:1024 8:4096 8:16384 8:32768
    step seed-recheck 150 env FA4_BENCH_REP_MS=30 python3 tools/seed_recheck.py \
      benchmarks/results/2026-12-03-NVIDIA-H200-fwd-session11.json --out "$OUT"
    step tune-abl-d64 200 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --causal no --cands 128,64,128 128,64,128,A 128,64,128,L --emulate-sm120 --out "$OUT/abl64"
    ;;
  s13b)
    # (session 13) the KV-cache memo (api._cache_memo: decode, paged, cache-slot and split-KV calls skip
    # the validation on a repeat): the memo tests, the serving, graph-capture, random and forward GPU
    # suites through it, then host time (dense and a decode step, with and without the memos) and the
    # decode benchmark beside the peers
    step fwd-serving 330 "${PYTEST_GPU[@]}" tests/torch/test_dense_memo.py tests/torch/test_serving_gpu.py \
      tests/torch/test_compile_graph_gpu.py tests/torch/test_random_gpu.py tests/torch/test_fwd_gpu.py \
      --junitxml="$OUT/fwd-serving.xml"
    step host 120 python3 tools/host_time.py --out "$OUT"
    step bench-decode 170 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_decode.py --out "$OUT"
    ;;
  s13c)
    # (session 13) the seed grid's 8-10 µs shapes that trail SDPA flash by under 1 µs in every repeat
    # (s13a): fa4 as dispatched, without GQA packing and without the few-tile rule, kernel times beside
    step tiny-fwd 150 env FA4_BENCH_REP_MS=30 python3 tools/tiny_fwd.py --out "$OUT"
    # short-cache decode split counts, now that the KV-cache memo's host time (43 µs) stays under
    # do_bench's L2 flush and the times are the GPU's: two passes
    for p in 1 2; do
      mkdir -p "$OUT/p$p"
      step "decode-splits-p$p" 100 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --paged \
        --out "$OUT/p$p" --shapes 1:512 1:1024 1:2048 1:4096 8:1024 8:2048
    done
    ;;
  s13d)
    # (session 13) V waited for just before P·V (fwd.LATE_V_WAIT, letter w; the loads-off ablation of
    # s13a gained 11% on d128): the forward and serving GPU tests with it, then timed beside the rows at
    # SM120 occupancy (d128, d64, d128 causal); short-cache decode splits timed as CUDA-graph replays
    step fwd-w 240 env FA4_FWD_KNOBS=LATE_V_WAIT=1 FA4_CACHE_DIR=/tmp/knob-w PYTHONPATH="tools:$PYTHONPATH" \
      "${PYTEST_GPU[@]}" -p knob_plugin tests/torch/test_fwd_gpu.py tests/torch/test_serving_gpu.py \
      --junitxml="$OUT/fwd-w.xml"
    step tune-w-d128 150 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --causal no --cands 128,32,128 128,32,128,w --emulate-sm120
    step tune-w-d64 120 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --causal no --cands 128,64,128 128,64,128,w --emulate-sm120
    step tune-w-d128c 120 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 128 \
      --causal yes --cands 64,64,128 64,64,128,w --emulate-sm120
    step decode-graph 100 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --paged --graph \
      --out "$OUT" --shapes 1:512 1:1024 1:2048 1:4096 8:1024 8:2048 8:4096
    ;;
  s14a)
    # (session 14) the new defaults: V waited for just before P·V (fwd.LATE_V_WAIT's rule: on except
    # where the sm_120a build would spill with it) and decode splits of at least 128 keys: the whole GPU suite, then memcheck
    # and racecheck of the forward launches (the 128-row non-causal rows among them)
    step suite 400 "${PYTEST_GPU[@]}" tests -k "not alt_rows" --junitxml="$OUT/suite.xml"
    step sanitize-fwd 150 env SANITIZE_K="forward" bash tools/sanitize.sh memcheck racecheck
    ;;
  s14c)
    # (session 14) the anchor grid at SM120's CTAs per SM (fa4 and upstream emulated, s11a), then the
    # short-cache decode splits on CUDA-graph replays with the new heuristic and the decode benchmark
    step bench-fwd-emu 280 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_fwd.py --grid anchor \
      --emulate-sm120 --out "$OUT"
    step decode-graph 100 env FA4_BENCH_REP_MS=20 python3 tools/decode_splits.py --paged --graph \
      --out "$OUT" --shapes 1:512 1:1024 1:2048 1:4096 8:1024 8:2048 8:4096
    step bench-decode 170 env FA4_BENCH_REP_MS=30 python3 benchmarks/bench_decode.py --out "$OUT"
    ;;
  s14d)
    # (session 14) the rows whose late V wait (now on by rule) was not timed: each against its early
    # build (letter e) at SM120 occupancy: d64 causal, d96, d192 and d256 (non-causal; d256 causal too)
    step tune-e-d64c 120 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 64 \
      --causal yes --cands 128,64,128 128,64,128,e --emulate-sm120
    step tune-e-d96 110 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 96 \
      --causal no --cands 128,64,128 128,64,128,e --emulate-sm120
    step tune-e-d192 120 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 192 \
      --causal no --cands 128,64,256 128,64,256,e --emulate-sm120
    step tune-e-d256 180 env FA4_BENCH_REP_MS=30 python3 benchmarks/tune_tiles.py --head-dim 256 \
      --causal both --cands 64,64,128 64,64,128,e --emulate-sm120
    ;;
  s14e)
    # (session 14) the 9 µs seed shapes where fa4's kernel is ~0.2 µs slower than SDPA flash's (s13c):
    # Nsight Compute of one bf16 2x128 16/8 d64 call, fa4 beside SDPA flash (launch, occupancy, stalls,
    # instruction counts, duration)
    NCU=(ncu --profile-from-start off --section SpeedOfLight --section Occupancy --section LaunchStats
         --section WarpStateStats --section InstructionStats --section SchedulerStats
         --section MemoryWorkloadAnalysis)
    for peer in fa4 sdpa; do
      step "ncu-tiny-$peer" 120 "${NCU[@]}" python3 benchmarks/profile_ncu.py fwd 2 128 16 64 --nheads-kv 8 --peer $peer
    done
    ;;
  *)
    echo "usage: bash tools/gpu_session.sh suite|graph|profile|bench|bench2|tune|adopt|adopt2|lpt|tune3|tune2|diag|diag2|s6tests|s6bench|s6|next|s7a|s7b|s7c|next8|tune4|s8a|s8b|s9a|s9b|s9c|s9d|s9e|next9|s10a|s10b|s10c|s10d|next10|next10b|next10c|s11a|s11b|s11d|next11|next11b|s12a|s12b|s12c|s12d|s13a|s13b|s13c|s13d|s14a|s14b|s14c|s14d|s14e" >&2
    exit 2
    ;;
esac
