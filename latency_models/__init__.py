"""Hardware profiles, measured per-layer latency lookup tables, predictors and energy models.

May import ``automl.core`` and nothing else of ours (see docs/architecture.md).
"""
