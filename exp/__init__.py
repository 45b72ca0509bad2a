"""Experiments, run by `malv exp NAME`.

Each experiment is a module here with ``main(argv) -> int``.  It runs headless
kernels through the same API a user would (spawn, the module traps, insmod)
and writes, under ``--out DIR``: ``results.json``, ``results.md`` (a Markdown
table) and PNG plots.  `exp.output` makes the writing all-or-nothing and
shows progress for long runs.
"""
