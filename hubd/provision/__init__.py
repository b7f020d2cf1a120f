"""Provisioning: hub keys, organisations' keys, the signed directory, broker configuration."""
