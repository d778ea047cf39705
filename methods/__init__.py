"""Methods contributed by umlbench beyond the baselines (PUMA)."""
