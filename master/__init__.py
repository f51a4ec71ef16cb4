"""The saltmarsh master: channels, authentication, jobs, events, and the operator's CLI."""
