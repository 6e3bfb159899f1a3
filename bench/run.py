"""Benchmark entry point from a checkout: ``python bench/run.py --dataset mt-bench`` (same as ``falcon-edge bench``)."""

import sys

from falcon_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
