"""The running hub: intake, dispatch, the receipt issuer and the daemon's own watches."""
