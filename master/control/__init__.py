"""The control socket: its server in the master, its messages, and the client the CLI uses."""
