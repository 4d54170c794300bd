"""lm-eval task YAMLs (package data)."""
