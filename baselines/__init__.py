"""Baseline methods of the UML benchmark, each a plugin on the shared trainer."""
