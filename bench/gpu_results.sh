#!/usr/bin/env bash
# Architecture choice and GPU timing on a lent GPU, in one call:
#  1. every candidate architecture x norm trained at once (30 epochs), folders back in $OUT;
#  2. the best architecture trained alone with BN for time to 85 % on this GPU.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
python3 bench/gpu_prepare.py .gpu/cifar10-jpeg.npz /tmp/data
timeout "${MATRIX_TIMEOUT:-330}" python3 bench/run_matrix.py --preset arch --jobs 9 --device cuda --threads 1 \
  --data-dir /tmp/data --runs-dir /tmp/runs > "$OUT/matrix.txt" 2>&1
python3 bench/run_matrix.py --preset arch --runs-dir /tmp/runs --report "$OUT/arch.md" --no-train > /dev/null
cat "$OUT/arch.md"
best=$(python3 - <<'PY'
import json, pathlib, statistics
scores = {}
for p in pathlib.Path("/tmp/runs").glob("*/results.json"):
    arch = p.parent.name.rsplit("-", 1)[0]
    scores.setdefault(arch, []).append(json.loads(p.read_text())["test_acc"])
print(max(scores, key=lambda a: statistics.mean(scores[a])) if scores else "s9")
PY
)
echo "best architecture: $best"
timeout "${SOLO_TIMEOUT:-150}" python3 -m cifarnet train --arch "$best" --norm bn --epochs 20 --device cuda \
  --data-dir /tmp/data --runs-dir /tmp/solo --name "solo-$best-bn-e20" --quiet
python3 bench/run_matrix.py --preset arch --runs-dir /tmp/solo --no-train --report "$OUT/solo.md" > /dev/null 2>&1
for f in /tmp/solo/*/metrics.jsonl; do grep '"eval"' "$f" | tail -25 > "$OUT/solo_evals.jsonl"; done
tar czf "$OUT/runs.tgz" --exclude=last.pt --exclude=best.pt -C /tmp runs solo
ls -la "$OUT"
