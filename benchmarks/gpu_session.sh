#!/usr/bin/env bash
# One device session on a lent GPU machine (no network there): nibabel travels as a wheel in .whl/.
# Trains the demo weights, measures training throughput, runs the CUDA tests and benchmarks/speed.py.
# Outputs go to $OUT. The timeouts add up to ~580 s: one call of the device tool (600 s at most;
# what is under $OUT comes back even if the last step is cut).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
timeout 180 python3 scripts/train_demo_weights.py --device cuda --subjects 30 --iterations 2500 \
  --out "$OUT/demo.pt" --data /tmp/synth --run /tmp/run 2>&1 | tee "$OUT/demo_weights.log"
cp /tmp/run/log.jsonl "$OUT/demo_weights_log.jsonl" 2>/dev/null
timeout 30 python3 benchmarks/bench_train.py --resolution 224 --width 1 --device cuda --iterations 20
timeout 60 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/core/test_cuda.py 2>&1 | tail -4
# Issue 10's GPU figures: the volume fp32 vs bf16 (slices/s) and the compiled Grad-CAM vs eager
# (the CPU rows are measured on the build machines, not here).
timeout 120 python3 benchmarks/speed.py --gpu-only --json "$OUT/speed.json" 2>&1 | tail -6
# Table 1 in minutes: every method, one seed, paper scale (224², width 1) but 100 iterations, as
# 7 processes sharing the GPU; the wall time and summary give the projection to ~2,400 iterations
# and 3 seeds.
start=$(date +%s)
timeout 150 python3 -m cavlog_core benchmark /tmp/synth --out /tmp/t1 --methods all --seeds 1 \
  --resolution 224 --width 1 --iterations 100 --warmup-iterations 30 --device cuda \
  --parallel 7 --keep-going 2>&1 | tr '\r' '\n' | grep -v "run/s\|it/s" | tail -20
echo "Table 1 subset wall: $(( $(date +%s) - start )) s"
cp /tmp/t1/summary.md "$OUT/table1_subset.md" 2>/dev/null
# Last, as it may not fit the call: does torch.compile pay for training on the GPU?
timeout 40 python3 benchmarks/bench_compile_train.py --device cuda --resolution 224 --width 1 \
  --precisions bf16 --iterations 10 --json "$OUT/compile_train.json" 2>&1 | grep "^cuda"
