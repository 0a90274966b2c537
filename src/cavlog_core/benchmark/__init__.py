"""Benchmark of every method (the paper's Table 1) and the paper's ablations, resumable.

``cavlog benchmark DATA --out DIR`` drives :func:`benchmark`; see ``docs/benchmark.md``.
"""

from .runner import BenchmarkData, BenchmarkEvent, RunResult, load_result, prepare_data, run_one
from .settings import ABLATIONS, TABLE1_METHODS, Ablation, Setting, ablation, method_settings
from .suite import BenchmarkConfig, BenchmarkResult, benchmark, run_benchmark

__all__ = [
    "ABLATIONS",
    "TABLE1_METHODS",
    "Ablation",
    "BenchmarkConfig",
    "BenchmarkData",
    "BenchmarkEvent",
    "BenchmarkResult",
    "RunResult",
    "Setting",
    "ablation",
    "benchmark",
    "load_result",
    "method_settings",
    "prepare_data",
    "run_benchmark",
    "run_one",
]
