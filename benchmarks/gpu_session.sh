#!/usr/bin/env bash
# One device session on a lent GPU machine (no network there): nibabel travels as a wheel in .whl/.
# Trains the demo weights, measures training throughput, runs the CUDA tests and benchmarks/speed.py.
# Outputs go to $OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
timeout 210 python3 scripts/train_demo_weights.py --device cuda --subjects 30 --iterations 2500 \
  --out "$OUT/demo.pt" --data /tmp/synth --run /tmp/run 2>&1 | tee "$OUT/demo_weights.log"
cp /tmp/run/log.jsonl "$OUT/demo_weights_log.jsonl" 2>/dev/null
timeout 30 python3 benchmarks/bench_train.py --resolution 224 --width 1 --device cuda --iterations 20
timeout 60 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/core/test_cuda.py 2>&1 | tail -4
# Issue 10's figures: CPU fp32/bf16 and eager/compiled and, with CUDA present, the GPU volume
# fp32 vs bf16 and the compiled Grad-CAM vs eager.
timeout 300 python3 benchmarks/speed.py --quick --json "$OUT/speed.json" 2>&1 | tail -8
