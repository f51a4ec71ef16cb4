"""Hypervisor set-up from the master: host profiles and ``host setup``."""
