"""The HTTP API: tornado on the master's own loop, in front of the service layer (master/service/).

``settings`` (parsed with master.yaml) and ``scopes`` are light; ``server`` imports tornado and is
loaded by the master only when ``http.listen`` is set.
"""
