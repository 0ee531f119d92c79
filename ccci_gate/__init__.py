"""ccci-gate: a Zuul/Gearman-style gating CI for Co-op Cloud recipes and any git project."""
__version__ = "0.1.0"
