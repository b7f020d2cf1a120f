"""The operator's commands (hubctl): they read the store, never the running engine's classes."""
