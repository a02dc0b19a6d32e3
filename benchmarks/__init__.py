"""Benchmarks, kept outside the product as timm keeps its own: bench_throughput (images/s of the training loop,
its parts and evaluation), official_style_baseline (the official recipe, timed the same way) and gpu_check (one
prepared GPU run with a table of targets). Nothing in src/ imports this package (tests/test_imports.py).
"""
