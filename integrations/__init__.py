"""Typed async httpx2 clients for the four vendors, with one error taxonomy."""
