"""The paper's experiments: the demo, the reproduction grid, the run pool and the studies behind docs/results*.md.

Not part of the training library: nothing else in src/ imports this package (tests/test_imports.py).
"""
