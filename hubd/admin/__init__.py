"""The admin socket: its protocol, the hub's server and hubctl's client."""
