"""Temporal workflows: deterministic code only (contracts and activity references)."""
