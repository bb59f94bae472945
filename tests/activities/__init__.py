"""Tests of the follow-up activities and their error mapping."""
