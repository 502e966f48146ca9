"""Kernel benchmark (writes JSON): see accel/eval/kernel_bench.py; same as `accel bench kernels`."""

import sys

from accel.eval.kernel_bench import main

if __name__ == "__main__":
    sys.exit(main())
