"""The saltmarsh agent: runs on each hypervisor, executes jobs, streams events to the master."""
