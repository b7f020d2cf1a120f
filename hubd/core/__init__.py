"""The hub's decisions, pure: no I/O, no clock reads; only schemas and the standard library."""
