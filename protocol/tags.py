"""Event tags (slash-separated) and the glob/prefix matching subscribers use."""

from __future__ import annotations

import fnmatch

from .targeting import is_glob

PREFIX = "saltmarsh"


def key_tag(agent_id: str, state: str) -> str:
    """saltmarsh/key/<agent>/<pending|accepted|rejected|deleted>"""
    return f"{PREFIX}/key/{agent_id}/{state}"


def agent_tag(agent_id: str, what: str) -> str:
    """saltmarsh/agent/<agent>/<up|down|heartbeat>"""
    return f"{PREFIX}/agent/{agent_id}/{what}"


def job_new_tag(jid: str) -> str:
    """saltmarsh/job/<jid>/new"""
    return f"{PREFIX}/job/{jid}/new"


def job_ret_tag(jid: str, agent_id: str) -> str:
    """saltmarsh/job/<jid>/ret/<agent>"""
    return f"{PREFIX}/job/{jid}/ret/{agent_id}"


def agent_may_fire(agent_id: str, tag: str) -> bool:
    """May the authenticated agent ``agent_id`` fire ``tag``?

    Agents may fire under their own subtrees (``saltmarsh/agent/<id>/...`` and
    ``saltmarsh/virt/<id>/...``) and anything outside ``saltmarsh/``; never
    the master's own tags (jobs, keys) nor another agent's, so an agent cannot
    forge a return or a key event.
    """
    if not tag.startswith(PREFIX + "/"):
        return "\x00" not in tag
    own = (f"{PREFIX}/agent/{agent_id}/", f"{PREFIX}/virt/{agent_id}/")
    return tag.startswith(own) and ".." not in tag.split("/")


def tag_matches(pattern: str, tag: str) -> bool:
    """A pattern without glob characters is a prefix; with them, a glob over the whole tag."""
    if not pattern:
        return True
    if is_glob(pattern):
        return fnmatch.fnmatchcase(tag, pattern)
    return tag.startswith(pattern)
