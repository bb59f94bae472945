"""Whole-stack tests: `trialist dev` and its real child processes."""
