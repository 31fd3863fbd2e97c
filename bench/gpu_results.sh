#!/usr/bin/env bash
# The shipped runs and the GPU time to 85 %, on a lent GPU, in one call (carry .gpu/cifar10-jpeg.npz):
#  1. s9 with BN, LN and GN, 30 epochs each, trained at the same time (preset "results"; PRESET=results-b256
#     for the first recipe, which the H100 figures in docs/RESULTS.md were measured with);
#  2. s9 + BN alone, 20 epochs at batch 256, LR 0.2, for the wall time to 85 % on this GPU.
# Run folders come back in $OUT/runs.tgz (without the resume checkpoints).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
python3 bench/gpu_prepare.py .gpu/cifar10-jpeg.npz /tmp/data
timeout "${MATRIX_TIMEOUT:-330}" python3 bench/run_matrix.py --preset "${PRESET:-results}" --jobs 3 --device cuda --threads 1 \
  --data-dir /tmp/data --runs-dir /tmp/runs --report "$OUT/results.md" > "$OUT/matrix.txt" 2>&1
timeout "${SOLO_TIMEOUT:-150}" python3 -m cifarnet train --arch s9 --norm bn --epochs 20 --batch-size 256 --lr 0.2 --device cuda \
  --data-dir /tmp/data --runs-dir /tmp/solo --name solo-s9-bn-e20 --quiet
python3 bench/run_matrix.py --runs-dir /tmp/solo --no-train --report "$OUT/solo.md" > /dev/null 2>&1
cat "$OUT/results.md" "$OUT/solo.md"
tar czf "$OUT/runs.tgz" --exclude=last.pt --exclude=best.pt -C /tmp runs solo
