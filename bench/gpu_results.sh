#!/usr/bin/env bash
# The shipped runs and the GPU time to 85 %, on a lent GPU, in one call (carry .gpu/cifar10-jpeg.npz):
#  1. the shipped s10 runs (BN, LN and GN, seeds 0 and 1, 60 epochs), trained at the same time (preset "shipped",
#     342 s on one H200 on 2026-12-04, beside five shorter runs; PRESET=s9 for the s9 runs);
#  2. s9 + BN alone, 20 epochs at batch 256, LR 0.2, for the wall time to 85 % on this GPU.
# Run folders come back in $OUT/runs.tgz (without the resume checkpoints).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
python3 bench/gpu_prepare.py .gpu/cifar10-jpeg.npz /tmp/data
timeout "${MATRIX_TIMEOUT:-480}" python3 bench/run_matrix.py --preset "${PRESET:-shipped}" --jobs 6 --device cuda --threads 1 \
  --data-dir /tmp/data --runs-dir /tmp/runs --report "$OUT/results.md" > "$OUT/matrix.txt" 2>&1
timeout "${SOLO_TIMEOUT:-150}" python3 -m cifarnet train --arch s9 --norm bn --epochs 20 --batch-size 256 --lr 0.2 --device cuda \
  --data-dir /tmp/data --runs-dir /tmp/solo --name solo-s9-bn-e20 --quiet
python3 bench/run_matrix.py --runs-dir /tmp/solo --no-train --report "$OUT/solo.md" > /dev/null 2>&1
cat "$OUT/results.md" "$OUT/solo.md"
tar czf "$OUT/runs.tgz" --exclude=last.pt --exclude=best.pt -C /tmp runs solo
