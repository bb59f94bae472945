"""Tests of CallFollowUpWorkflow on real Temporal servers with the vendor sandbox."""
