"""The operator's service layer: everything an operator can do, with typed requests, results and errors.

    types/       requests and results (msgspec Structs), one module per domain; each default written once
    errors.py    NotFound, Conflict, Unavailable, TimedOut, Refused, Invalid; their codes and HTTP statuses
    registry.py  the operations by command name, and what a call gets (ServiceContext)
    jobs.py, batches.py, keys.py, agents.py, vms.py, hosts.py, images.py, pki.py, events.py
                 one module per domain

Front ends only translate: the control socket (master/control/server.py) for the CLI, later the HTTP
API. This package's ``__init__`` imports nothing: the CLI loads ``types`` and ``errors`` alone.
"""
