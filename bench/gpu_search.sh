#!/usr/bin/env bash
# The issue-18 search on a lent GPU (carry .gpu/cifar10-jpeg.npz): PHASE=A (candidates, 20 epochs) or
# PHASE=B W=r2 E=60 (the chosen arch with BN, LN, GN x seeds 0 and 1, plus short probes). Results in $OUT.
set -u
python3 bench/gpu_prepare.py .gpu/cifar10-jpeg.npz /tmp/data && python3 bench/gpu_search.py
