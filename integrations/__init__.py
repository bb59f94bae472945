"""Typed async httpx clients for the four vendors, with one error taxonomy."""
