"""The hub's web endpoints: Prometheus metrics, the health probe and the status page."""
