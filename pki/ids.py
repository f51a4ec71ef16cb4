"""Agent ids become file names and event-tag parts, so they are validated first."""

import re

from .errors import InvalidAgentId

MAX_ID_LENGTH = 128
# Letters, digits, dot, dash, underscore; starts with a letter or digit so that
# "." and ".." and hidden files are impossible.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def validate_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it is a safe name, else raise InvalidAgentId."""
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidAgentId("agent id is empty")
    if len(agent_id) > MAX_ID_LENGTH:
        raise InvalidAgentId(f"agent id is {len(agent_id)} characters, more than {MAX_ID_LENGTH}")
    if not _SAFE_ID.fullmatch(agent_id):
        raise InvalidAgentId(f"agent id {agent_id!r} is not a safe name (letters, digits, . _ -)")
    return agent_id
