"""Benchmarks of the evaluation engine: `make bench` (CPU, bench/cpu.py), `make bench-gpu` (bench/gpu.py)."""
