"""hubd: the provincial office's exchange (the hub daemon) and hubctl, its operator tool."""
