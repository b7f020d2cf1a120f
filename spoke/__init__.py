"""spoke: the agent each organisation runs; outbox and inbox folders for integrators."""
