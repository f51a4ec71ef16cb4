"""The CLI's top-level commands: which module builds each, and its one-line help.

Kept apart from the modules themselves so that ``saltmarsh`` imports only the module of the
command typed (and ``saltmarsh --help`` none of them): with PYTHONDONTWRITEBYTECODE set, each
module imported is also a module compiled at every start.
"""

# command -> the module of master/cli that registers it (with the other commands of its family)
MODULES = {
    "key": "keys",
    "agent": "agents",
    "run": "jobs",
    "job": "jobs",
    "events": "events",
    "virt": "virt",
    "host": "virt",
    "pki": "pki",
    "image": "images",
    "token": "tokens",
}

# command -> its help in ``saltmarsh --help`` (also given to its parser by its module)
HELP = {
    "key": "list, accept, reject and delete agent keys",
    "agent": "every known agent: key, up/down since when, labels, version, jobs",
    "run": "run a function on the targeted agents",
    "job": "jobs in the job cache",
    "events": "stream events whose tag matches GLOB (a prefix or a glob)",
    "virt": "hypervisors and their VMs",
    "host": "hypervisor administration",
    "pki": "the CA that signs agents' libvirt TLS certificates",
    "image": "bootable guest images in the master's file roots",
    "token": "bearer tokens for the HTTP API: create, list, revoke",
}
