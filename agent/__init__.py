"""The real-time voice agent: LiveKit entrypoint, tools, resilience and the handoff to Temporal."""
