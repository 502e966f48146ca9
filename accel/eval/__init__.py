"""Evaluation: kernel benchmarks (and, later, fidelity/speed comparisons and reports)."""
