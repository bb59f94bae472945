"""Development tooling, not the product: demo calls, scripted LLM stand-in, seeded people."""
