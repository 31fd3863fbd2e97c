#!/usr/bin/env bash
# Recipe search on a lent GPU: every sweep configuration at once, run folders back in $OUT.
#   (device tool) bash bench/gpu_sweep.sh   with .gpu/cifar10-jpeg.npz carried
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 bench/gpu_prepare.py .gpu/cifar10-jpeg.npz /tmp/data
timeout "${SWEEP_TIMEOUT:-420}" python3 bench/run_matrix.py --preset "${PRESET:-sweep}" --jobs "${JOBS:-16}" \
  --device cuda --threads 1 --data-dir /tmp/data --runs-dir /tmp/runs > "$OUT/matrix.txt" 2>&1
tail -40 "$OUT/matrix.txt"
python3 bench/run_matrix.py --preset "${PRESET:-sweep}" --runs-dir /tmp/runs --report "$OUT/report.md" --no-train
tar czf "$OUT/runs.tgz" --exclude=last.pt --exclude=best.pt -C /tmp runs
ls -la "$OUT"
