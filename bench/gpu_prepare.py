"""Unpack the compact JPEG pack into a standard batches folder (once per GPU machine).

python bench/gpu_prepare.py .gpu/cifar10-jpeg.npz /tmp/data
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifarnet.data.cifar10 import load_jpeg_npz, write_dataset

if __name__ == "__main__":
    started = time.time()
    root = write_dataset(Path(sys.argv[2]), load_jpeg_npz(Path(sys.argv[1])))
    print(f"unpacked to {root} in {time.time() - started:.1f} s")
