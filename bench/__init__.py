"""Performance benchmarks, run by `malv bench`.

Every benchmark reports `Figure`s: a measured value, its unit and, where there
is one, a baseline measured in the same run and the ratio to it.  Targets are
ratios, never timed assertions in tests.
"""
