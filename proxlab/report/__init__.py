"""Reports across a sweep: tables in the paper layout, accuracy by step, FLOPs, plots, W&B sync."""
