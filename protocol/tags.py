"""Event tags (slash-separated), the one rule of what a tag may hold, and the glob/prefix matching subscribers use.

A tag is 1 to MAX_TAG_LENGTH printable ASCII characters other than the space. Tags are
printed one per line, beside a time and the event's data (``saltmarsh events``), and land in
log lines; a newline, an ANSI escape or a space in one could make an agent's event read as
another line or another field (a forged job return), so such a tag is refused where it is
made (the agent's ``event.send``) and again where it arrives (the master's relay).
"""

from __future__ import annotations

import fnmatch

from .limits import MAX_TAG_LENGTH
from .targeting import is_glob

PREFIX = "saltmarsh"
TAG_RULE = f"tags are 1 to {MAX_TAG_LENGTH} printable ASCII characters, without spaces"


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


def batch_tag(batch: str, what: str, agent_id: str = "") -> str:
    """saltmarsh/batch/<batch>/<start|ret|silent>/<agent>, or saltmarsh/batch/<batch>/done"""
    return f"{PREFIX}/batch/{batch}/{what}/{agent_id}" if agent_id else f"{PREFIX}/batch/{batch}/{what}"


def _allowed(char: str) -> bool:
    return "!" <= char <= "~"


def _characters_fault(text: str) -> str:
    """Why ``text`` holds a character no tag may hold ("" if it holds none)."""
    for offset, char in enumerate(text):
        if not _allowed(char):
            return f"it holds {char!r} at offset {offset} ({TAG_RULE})"
    return ""


def tag_fault(tag: object) -> str:
    """Why ``tag`` is not a well-formed tag, or "" if it is one.

    The reason quotes the offending character escaped (repr), so it is safe to log and print.
    """
    if not isinstance(tag, str):
        return f"a tag must be a string, not {type(tag).__name__}"
    if not tag:
        return f"the tag is empty ({TAG_RULE})"
    if len(tag) > MAX_TAG_LENGTH:
        return f"the tag is {len(tag)} characters long ({TAG_RULE})"
    return _characters_fault(tag)


def pattern_fault(pattern: str) -> str:
    """Why no tag could ever match ``pattern`` (a subscription's prefix or glob), or "" if one could."""
    if len(pattern) > MAX_TAG_LENGTH:
        return f"the pattern is {len(pattern)} characters long, so no tag can match it ({TAG_RULE})"
    fault = _characters_fault(pattern)
    return f"no tag can match the pattern: {fault}" if fault else ""


def agent_tag_fault(agent_id: str, tag: object) -> str:
    """Why the authenticated agent ``agent_id`` may not fire ``tag``, or "" if it may.

    Agents may fire well-formed tags under their own subtrees (``saltmarsh/agent/<id>/...``,
    ``saltmarsh/virt/<id>/...`` and ``saltmarsh/host/<id>/...``, the progress of ``host setup``)
    and anything outside ``saltmarsh/``; never the master's
    own tags (jobs, keys) nor another agent's, so an agent cannot forge a return or a key event.
    """
    fault = tag_fault(tag)
    if fault or not isinstance(tag, str) or not tag.startswith(PREFIX + "/"):
        return fault
    own = (f"{PREFIX}/agent/{agent_id}/", f"{PREFIX}/virt/{agent_id}/", f"{PREFIX}/host/{agent_id}/")
    if not tag.startswith(own) or ".." in tag.split("/"):
        return f"it is not one it may fire (under {PREFIX}/ only {own[0]}..., {own[1]}... and {own[2]}...)"
    return ""


def agent_may_fire(agent_id: str, tag: str) -> bool:
    """May the authenticated agent ``agent_id`` fire ``tag``? (see agent_tag_fault)"""
    return not agent_tag_fault(agent_id, tag)


def tag_matches(pattern: str, tag: str) -> bool:
    """A pattern without glob characters is a prefix; with them, a glob over the whole tag."""
    if not pattern:
        return True
    if is_glob(pattern):
        return fnmatch.fnmatchcase(tag, pattern)
    return tag.startswith(pattern)
