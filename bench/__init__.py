"""Benchmarks: validation speed and memory (validate_bench), orchestration history size (history_bench)."""
