"""Process-level glue: settings, the operator and dev CLI, and Temporal connection helpers."""
