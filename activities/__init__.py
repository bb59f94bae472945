"""Temporal activities: thin classes over integrations/ that map vendor errors for retries."""
