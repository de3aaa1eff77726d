"""Benchmarks (``make bench``): each figure compares the project with a baseline measured in
the same run, against the running local stack, and prints ratios."""
