#!/usr/bin/env bash
# The exact commands behind docs/benchmark.md.
#
#   scripts/run_benchmark.sh cpu  [WORK]  Table 1 and the ablations (the N slices x z table
#                                         included) on 2 CPU cores: 64², width 0.25, 300
#                                         iterations, SEEDS seeds (default 3; about 1 h per seed
#                                         for Table 1 alone, ~70 s per constrained run)
#   scripts/run_benchmark.sh ablations [WORK]  the cpu mode's ablations without Table 1, in the
#                                         quick mode's folder (its constrained runs are the
#                                         default model); ABLATIONS="lambda t" picks some
#                                         (n-by-z: the N slices x z table, in
#                                         WORK/quick[-RES]-slicesN)
#   scripts/run_benchmark.sh quick [WORK] the constrained model (gradient and gradient-running-bn),
#                                         VAE, AE and FLAIR thresholding, 3 seeds, 64² (~20 min;
#                                         RES=128 THREADS=1: ~1.5 h, in WORK/quick-128;
#                                         METHODS=all: every Table 1 method in that folder)
#   CPU_WORKERS=N (cpu, ablations, quick) N one-thread workers that share the runs through
#                                         the per-run locks (logs: WORK/cpu-worker<i>.log)
#   scripts/run_benchmark.sh loco [WORK]  leave-one-case-out fine-tuning on the real BraTS 2013
#                                         cases of ../shared/data (scripts/real_loco.py)
#   scripts/run_benchmark.sh gpu  [WORK]  one GPU: Table 1 with 3 seeds and every ablation (seed 0)
#                                         at 128², width 0.5, 1000 iterations, as parallel workers
#   scripts/run_benchmark.sh real [WORK]  sanity table: the cpu run's models (seed 0) evaluated on
#                                         the 3 real BraTS 2013 cases in ../shared/data/brats2013
#
# WORK defaults to runs/benchmark (git-ignored). Everything is resumable: run it again after an
# interruption and finished runs are skipped. The data are the `glioma` preset (LESIONS=ms for the
# other); training uses the paper's 10 central lesion-free slices (SLICES=brain for every brain
# slice). Knobs: SUBJECTS, SHAPE, LESIONS, SLICES, SEEDS, RES, WIDTH, ITERS, WARMUP, METHODS,
# WORKERS, CPU_WORKERS, ABLATIONS, DEVICE, WORKER_TIMEOUT, PYTHON, FLIPS (the test-time flips of
# every map, --map-flips: 1, the paper's single pass, by default; another value gets its own
# folders, e.g. WORK/quick-flips4).
set -euo pipefail

MODE=${1:-cpu}
WORK=${2:-runs/benchmark}
PY=${PYTHON:-.venv/bin/python}
SUBJECTS=${SUBJECTS:-40}
SHAPE=${SHAPE:-240,240,155}
LESIONS=${LESIONS:-glioma}
DATA="$WORK/synth$SUBJECTS-$LESIONS"
SHARED=(--map-flips "${FLIPS:-1}"
        --split-fractions 0.7,0.1,0.2 --slices "${SLICES:-central:10}" --eval-slices central:10
        --lr 3e-4 --batch-size 32 --cache-dir "$WORK/cache")

cavlog() { "$PY" -m cavlog_core "$@"; }

# The quick mode's folder (RES=128 writes to quick-128: a folder holds one configuration's runs).
QUICK="$WORK/quick"
[ "${RES:-64}" = 64 ] || QUICK="$WORK/quick-$RES"
FSUF=""  # the folder suffix of another FLIPS
[ "${FLIPS:-1}" = 1 ] || FSUF="-flips$FLIPS"
QUICK="$QUICK$FSUF"

bench() {  # `cavlog benchmark "$@"`, as CPU_WORKERS one-thread workers when that is > 1
  local n=${CPU_WORKERS:-1} i rc=0 pids=() args=() a skip=0
  if [ "$n" -le 1 ]; then cavlog benchmark "$@"; return; fi
  for a in "$@"; do  # each worker gets one thread: drop the mode's --threads N
    if [ "$skip" = 1 ]; then skip=0; elif [ "$a" = --threads ]; then skip=1; else args+=("$a"); fi
  done
  for i in $(seq "$n"); do
    cavlog benchmark "${args[@]}" --threads 1 > "$WORK/cpu-worker$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || rc=$?; done
  [ "$rc" = 0 ] || { echo "a worker failed: see $WORK/cpu-worker*.log" >&2; return "$rc"; }
  tail -n 3 "$WORK/cpu-worker1.log"
}

fill_cache() {  # preprocess the slices once before parallel workers (FLAIR thresholding trains
  # nothing; a throw-away folder, so no summary of the real runs is overwritten and another
  # RES in the same WORK is not refused as a different configuration)
  [ "${CPU_WORKERS:-1}" -le 1 ] && return
  local tmp
  tmp=$(mktemp -d "$WORK/.cache-fill.XXXXXX")
  local rc=0
  cavlog benchmark "$DATA" --out "$tmp" --methods flair-threshold "$@" --seeds 1 > /dev/null \
    || rc=$?
  rm -rf "$tmp"  # also when the fill failed: the error stops the script, no folder is left
  return "$rc"
}

synth() {  # the synthetic dataset of `cavlog synth DATA --subjects N --seed 0`, in parallel
  if [ -f "$DATA/.complete" ]; then
    # Data of another anatomy version differ voxel for voxel: say so rather than mix results.
    "$PY" -c "import json, sys; from cavlog_core.synth import ANATOMY_VERSION as v, \
dataset_anatomy_version; old = dataset_anatomy_version(json.load(open(sys.argv[1]))); \
sys.exit(0 if old == v else f'{sys.argv[1]}: anatomy version {old}, this code makes {v}: \
use another WORK (or delete that folder) to rerun on the current anatomy')" "$DATA/dataset.json"
    return
  fi
  "$PY" - "$DATA" "$SUBJECTS" "$SHAPE" "$LESIONS" <<'EOF'
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cavlog_core.synth import (ANATOMY_VERSION, generate_subject, healthy_flags, subject_seed,
                               write_subject)
from cavlog_core.config import SynthConfig

out, n, shape = Path(sys.argv[1]), int(sys.argv[2]), tuple(int(v) for v in sys.argv[3].split(","))
lesions = sys.argv[4]
flags = healthy_flags(n, SynthConfig().healthy_fraction)


def one(k):  # subject k is the same as in `cavlog synth` (seed derived from (seed 0, k))
    s = generate_subject(subject_seed(0, k), shape, healthy=bool(flags[k]), lesions=lesions)
    write_subject(s, out / f"SYN_{k:04d}", f"SYN_{k:04d}")


with ProcessPoolExecutor() as pool:
    list(pool.map(one, range(n)))
(out / "dataset.json").write_text(json.dumps({"lesions": lesions, "subjects": n,
                                              "anatomy_version": ANATOMY_VERSION}) + "\n")
(out / ".complete").touch()
EOF
}

case "$MODE" in
cpu|ablations)
  synth
  C=(--seeds "${SEEDS:-3}" --resolution "${RES:-64}" --width "${WIDTH:-0.25}" --iterations "${ITERS:-300}"
     --warmup-iterations "${WARMUP:-100}" "${SHARED[@]}" --device "${DEVICE:-cpu}" --threads 1)
  OUT="$WORK/cpu$FSUF"
  # n-by-z: the paper's N slices x z table, the latent ablation with 1 and 30 central training
  # slices too (N = 10 is the latent ablation; each N trains its own default model, in OUT-slicesN).
  ABL=(healthy-percentile cam-weights map-flips image-vs-pixel cam-stage lambda t recon barrier-vs-l2
       p-by-t latent n-by-z)
  if [ "$MODE" = ablations ]; then
    OUT="$QUICK"  # next to the quick mode's runs, whose constrained runs are the default model
    [ -z "${ABLATIONS:-}" ] || read -ra ABL <<< "$ABLATIONS"
  fi
  fill_cache "${C[@]}"
  [ "$MODE" = ablations ] || bench "$DATA" --out "$OUT" --methods all "${C[@]}"
  # The ablations of docs/benchmark.md (a setting equal to an earlier one reuses its run).
  for a in "${ABL[@]}"; do
    if [ "$a" = n-by-z ]; then
      for n in 1 30; do
        bench "$DATA" --out "$OUT-slices$n" --ablation latent "${C[@]}" \
          --slices "central:$n" --keep-going
      done
    else
      bench "$DATA" --out "$OUT" --ablation "$a" "${C[@]}" --keep-going
    fi
  done
  ;;
gpu)
  synth
  OUT="$WORK/gpu$FSUF"
  G=(--resolution "${RES:-128}" --width "${WIDTH:-0.5}" --iterations "${ITERS:-1000}"
     --warmup-iterations "${WARMUP:-200}" "${SHARED[@]}" --device "${DEVICE:-cuda}"
     --threads 1 --keep-going)
  ABLATIONS=(barrier-vs-l2 p-by-t image-vs-pixel lambda cam-stage t recon)
  # Fill the slice cache once (FLAIR thresholding trains nothing), then identical workers share
  # the runs through the per-run locks: each takes the next run nobody holds.
  cavlog benchmark "$DATA" --out "$OUT" --methods flair-threshold --seeds 1 "${G[@]}"
  worker() {
    cavlog benchmark "$DATA" --out "$OUT" --methods all --seeds 1 "${G[@]}"
    for a in "${ABLATIONS[@]}"; do
      cavlog benchmark "$DATA" --out "$OUT" --ablation "$a" --seeds 1 "${G[@]}"
    done
    cavlog benchmark "$DATA" --out "$OUT" --methods all --seeds 1,2 "${G[@]}"
  }
  for i in $(seq "${WORKERS:-12}"); do
    timeout "${WORKER_TIMEOUT:-100000}" bash -c "$(declare -f cavlog worker); $(declare -p \
      PY DATA OUT G ABLATIONS); worker" > "$WORK/worker$i.log" 2>&1 &
  done
  wait || true
  # Summaries of whatever finished (a worker stopped by its timeout leaves runs to resume).
  cavlog benchmark "$DATA" --out "$OUT" --methods all --seeds 3 "${G[@]}" --summarize-only
  for a in "${ABLATIONS[@]}" healthy-percentile; do
    cavlog benchmark "$DATA" --out "$OUT" --ablation "$a" --seeds 1 "${G[@]}" --summarize-only \
      || true
  done
  ;;
quick)
  synth
  C=(--seeds "${SEEDS:-3}" --resolution "${RES:-64}" --width "${WIDTH:-0.25}"
     --iterations "${ITERS:-300}" --warmup-iterations "${WARMUP:-100}" "${SHARED[@]}"
     --device "${DEVICE:-cpu}" --threads "${THREADS:-2}")
  Q="$QUICK"
  fill_cache "${C[@]}"
  bench "$DATA" --out "$Q" --methods "${METHODS:-flair-threshold,ae,vae,constrained}" "${C[@]}"
  bench "$DATA" --out "$Q" --ablation cam-weights "${C[@]}" --keep-going
  ;;
loco)
  "$PY" scripts/real_loco.py --out "$WORK/loco" --iterations "${ITERS:-300}"
  ;;
real)
  "$PY" - "$WORK/cpu" ../shared/data/brats2013 <<'EOF'
import sys
from pathlib import Path

from cavlog_core.evaluate import run_evaluate

runs, data = Path(sys.argv[1]), Path(sys.argv[2])
if not data.is_dir():
    sys.exit(f"{data}: not found (the real cases live in ../shared/data)")
print("| Method | AUROC | AUPRC | AP | [DICE] | DICE p95 | DICE/scan p95 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for ckpt in sorted(runs.glob("*/seed0/checkpoint.pt")):
    r = run_evaluate(ckpt, data, split="all", slices="central:10", device="cpu").to_dict()
    p95 = r["strategies"].get("healthy_p95", {})
    print(f"| {ckpt.parent.parent.name} | {r['auroc']:.3f} | {r['auprc']:.3f} | "
          f"{r['average_precision']:.3f} | {r['operating_point']['dice_best']:.3f} | "
          f"{p95.get('dice', float('nan')):.3f} | {p95.get('dice_per_scan_mean', float('nan')):.3f}"
          f" ± {p95.get('dice_per_scan_std', float('nan')):.3f} |", flush=True)
EOF
  ;;
*)
  echo "usage: $0 cpu|ablations|quick|gpu|loco|real [WORK]" >&2
  exit 2
  ;;
esac
