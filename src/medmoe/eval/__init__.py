"""Evaluation: zero-shot, retrieval, linear probing, routing, grounding, explanations, reports.

The zero-shot scoring options live here, importable without torch (the CLI builds its parser from
them); ``zeroshot.py`` says what each one computes.
"""
SCORINGS = ("global", "local", "both")
ENSEMBLES = ("mean", "max")
DEFAULT_SCORING, DEFAULT_ENSEMBLE = "both", "mean"  # chosen by measurement: benchmarks/RESULTS.md
