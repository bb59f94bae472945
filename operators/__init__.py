"""Operator tools: the `trialist` command (dev stack, follow-up listing and repair)."""
