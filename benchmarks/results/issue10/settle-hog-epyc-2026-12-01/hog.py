"""Streams over ``MB`` of float32 memory for ``SECONDS`` after ``DELAY`` seconds: ``python hog.py DELAY SECONDS MB``."""

import sys
import time

import numpy as np

delay, duration, mb = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)
buffer = np.ones(int(mb * 2**20 / 4), dtype=np.float32)
end = time.time() + duration
sweeps = 0
while time.time() < end:
    buffer += 1.0
    sweeps += 1
print(f"hog: {sweeps} sweeps of {mb:g} MB in {duration:.0f} s", flush=True)
