"""``virt.*``: the hypervisor's VMs, networks and pools through libvirt, one module per family.

Every function reaches libvirt through the agent's one long-lived connection
(``LibvirtHost``), so the test driver keeps its state across jobs and a real
libvirtd is not reconnected for every call as Salt does.
"""
