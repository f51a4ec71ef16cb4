"""Secrets stay secret (issue 10, part 2): the job cache and the event bus keep them redacted.

Real master and agents (test:/// libvirt). A seeded VM with a VNC console puts a
one-time join token into ``virt.init``'s kwargs and a console password into its
return. Neither may appear in ``job show`` (human or JSON), ``job list``,
``saltmarsh events``, or the job cache's database file; ``virt vnc NAME``, the one
command that needs the password, still gets it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from saltmarsh.protocol.codec import decode
from saltmarsh.protocol.redaction import REDACTED, redact

from .cluster import Cluster, EventRecorder, wait_until


def test_redact_walks_every_depth_and_keeps_the_rest() -> None:
    value = {"name": "vm", "join_token": "t0k", "graphics": {"type": "vnc", "password": "pw"},
             "list": [{"Passwd": "x", "keep": 1}], "empty_password": {"password": ""}}
    assert redact(value) == {"name": "vm", "join_token": REDACTED, "graphics": {"type": "vnc", "password": REDACTED},
                             "list": [{"Passwd": REDACTED, "keep": 1}], "empty_password": {"password": ""}}
    assert value["graphics"]["password"] == "pw"  # a copy: the live value is untouched


def test_job_cache_and_events_never_show_join_tokens_or_console_passwords(cloud: Cluster) -> None:
    recorder = EventRecorder(cloud, "saltmarsh/job/")

    def recording() -> bool:
        cloud.cli("run", "hv1", "test.ping")
        return bool(recorder.events)
    wait_until(recording, timeout=15, interval=0.2, what="the event subscription to be live")
    try:
        created = cloud.cli_json("virt", "init", "sec1", "1", "64", "--enable-vnc", "--seed", "--no-wait",
                                 "--host", "hv1",
                                 "--master-address", "10.0.2.2")
        password = cloud.cli("virt", "vnc", "sec1").stdout
        match = re.search(r"password (\S+)\)", password)
        assert match and match.group(1) not in ("none", "?", REDACTED), password
        secret_password = match.group(1)
        assert created["host"] == "hv1"
        assert secret_password not in json.dumps(created), "virt init printed the console password"

        jobs = cloud.cli_json("job", "list")
        init_jid = next(j["jid"] for j in jobs if j["fun"] == "virt.init")
        vnc_jid = next(j["jid"] for j in jobs if j["fun"] == "virt.get_graphics")
        shown = {jid: (cloud.cli("job", "show", jid).stdout, cloud.cli("job", "show", jid, "--json").stdout)
                 for jid in (init_jid, vnc_jid)}
        init_json = json.loads(shown[init_jid][1])
        assert _find(init_json, "join_token") == [REDACTED], init_json
        assert REDACTED in _find(init_json, "password")
        assert _find(json.loads(shown[vnc_jid][1]), "password") == [REDACTED]
        for human, as_json in shown.values():
            assert secret_password not in human and secret_password not in as_json
        cache = sqlite3.connect(cloud.master_dir / "state" / "jobs.sqlite")
        try:
            blobs = [row[0] for row in cache.execute("SELECT kwargs FROM jobs")]
            blobs += [row[0] for row in cache.execute("SELECT ret FROM returns")]
        finally:
            cache.close()
        decoded = [decode(blob, Any) for blob in blobs]  # type: ignore[arg-type]
        assert all("join_token" not in json.dumps(d) or REDACTED in json.dumps(d) for d in decoded)
        assert not any(secret_password.encode() in blob for blob in blobs)
    finally:
        recorder.close()
    events = json.dumps([(event.tag, event.data) for event in recorder.events])
    assert "virt.get_graphics" in events and "virt.init" in events, events[-2000:]
    assert secret_password not in events and REDACTED in events


def _find(value: Any, key: str) -> list[Any]:
    """Every value under ``key`` at any depth."""
    found: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                found.append(v)
            found += _find(v, key)
    elif isinstance(value, list):
        for v in value:
            found += _find(v, key)
    return found
