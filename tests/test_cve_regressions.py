"""Salt's CVE-2020-11651/11652 regression tests, ported to saltmarsh: nobody is let in.

CVE-2020-11651: Salt's request server dispatched any method by name on a
channel nobody had to authenticate to. Here, before its key is accepted, a
peer reaches exactly one request kind, key submission (hello): every other
kind, correctly signed or not, by a pending key or by a key the master never
saw, is refused with a logged reason and leaves no job, no event and no file
behind.
CVE-2020-11652: path traversal in the file server and token paths. Here a
file request, a key command or a certificate request naming a path outside
its place is refused and logged, and an agent id that is not a safe name is
refused before anything looks it up in the key store.

The bounds on what peers that are not accepted can cost the master (pending
keys, replay caches, log lines, Boxes) are tested in test_peer_bounds.py.

Covered elsewhere and not repeated here: returns, events and heartbeat from a
pending and an unknown key (tests/test_security.py,
test_an_unaccepted_key_may_only_submit_itself, extended below to every kind
and to bad signatures); master:// images leaving the root through the agent's
image cache (tests/test_images.py, test_paths_leaving_the_root_are_refused_and_logged);
malformed envelopes, headers and bodies of every shape (tests/test_bounded_input.py).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from saltmarsh.master.cloud.fileserver import SERVED_RECORDS
from saltmarsh.pki.csr import build_csr, new_key
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.envelope import Outer, SignedHeader
from saltmarsh.protocol.messages import (
    REQUEST_KINDS,
    Ack,
    CertIssued,
    CertRequest,
    CrlData,
    CrlRequest,
    Failed,
    FileData,
    FileInfo,
    FileRead,
    FileStat,
    Heartbeat,
    Hello,
    Message,
    Refused,
    Welcome,
)

from .cluster import Cluster, wait_until
from .master_state import key_files, rejected_frames, show_logs_on_failure, state_tree, wait_lines
from .wire import (
    REJECTED,
    EventWatch,
    RawAgent,
    box,
    count,
    events_message,
    flip_byte,
    handmade_frame,
    master_identity,
    register_raw_agent,
    request_frame,
    returns_message,
    silent_job,
)

IMAGE = b"image bytes " * 1000
SECRET = b"outside-the-root secret"


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A master with one file root holding images/base.img, a symlink out of the root, and a secret beside it."""
    root = tmp_path / "files"
    (root / "images").mkdir(parents=True)
    (root / "images" / "base.img").write_bytes(IMAGE)
    (tmp_path / "outside.img").write_bytes(SECRET)
    (root / "link-out").symlink_to("/etc")
    (root / "images" / "link-file").symlink_to(tmp_path / "outside.img")
    cluster = Cluster(tmp_path / "c", file_roots=[str(root)])
    try:
        cluster.start_master()
        yield cluster
    finally:
        cluster.stop()
        show_logs_on_failure(cluster, request)


def one_of_every_request(agent_id: str, jid: str) -> list[Message]:
    """A well-formed message of every request kind but key submission, as a real agent would send it."""
    csr = build_csr(new_key(), [agent_id])
    messages: list[Message] = [
        Heartbeat(),
        returns_message(jid, f"from {agent_id}"),
        events_message(f"saltmarsh/agent/{agent_id}/up"),
        FileStat(path="images/base.img"),
        FileRead(path="images/base.img", index=0),
        CertRequest(server_csr=csr, client_csr=csr),
        CrlRequest(),
    ]
    # A request kind added later must be added here too, or this test says so.
    assert {m.KIND for m in messages} == set(REQUEST_KINDS) - {Hello.KIND}
    return messages


def with_presented(frame: bytes, presented: bytes, *, signature: bytes | None = None) -> bytes:
    """``frame`` re-wrapped to present ``presented`` (and carry ``signature``) instead of its own."""
    outer = decode(frame, Outer)
    return encode(Outer(outer.sender, presented, outer.signed,
                        outer.signature if signature is None else signature, outer.body))


def forgeries(peer: RawAgent, message: Message) -> list[tuple[bytes, str, bool]]:
    """Frames of ``message`` from ``peer`` signed right and wrong: (frame, reason logged, answered with Refused)."""
    name, kind, pub = re.escape(peer.agent_id), message.KIND, peer.master_public
    unaccepted = rf"'{name}' sent '{kind}' but its key is not accepted: an unaccepted key may only submit itself$"
    unverified = rf"signature of frame from '{name}' does not verify$"
    signed, _ = request_frame(peer.identity, peer.agent_id, message, pub, present_key=True)
    outer = decode(signed, Outer)
    other, _ = request_frame(Identity.generate(), peer.agent_id, message, pub, present_key=True,
                             cipher_identity=peer.identity)
    bare, _ = request_frame(peer.identity, peer.agent_id, message, pub)
    own = peer.identity.public_key
    return [
        # (a) correctly signed, presenting its own key
        (signed, unaccepted, True),
        # (b) bad signatures: made by another key; one byte of the signed header changed
        (with_presented(other, own), unverified, False),
        (flip_byte(signed, signed.index(outer.signed) + 5), unverified, False),
        # (c) garbage in the signature field: random, all zeros (unsigned), missing
        (with_presented(signed, own, signature=os.urandom(64)), unverified, False),
        (with_presented(signed, own, signature=bytes(64)), unverified, False),
        (with_presented(signed, own, signature=b""), r"envelope violates its schema", False),
        # correctly signed, but presenting no key to verify it with
        (bare, rf"no accepted key for '{name}' and none presented$", False),
    ]


# ---- CVE-2020-11651: before acceptance, only key submission ---------------------------------


@pytest.mark.timeout(180)
def test_before_acceptance_only_key_submission_is_reachable(served: Cluster, zctx: zmq.Context[Any]) -> None:
    cluster = served
    victim = register_raw_agent(cluster, zctx, "victim")  # accepted: shows the same requests do work
    jid = silent_job(cluster, "victim")
    newbie = register_raw_agent(cluster, zctx, "newbie", accept=False)  # its key is pending
    stranger = RawAgent(zctx, cluster.request_port, Identity.generate(), "stranger", victim.master_public)
    watch = EventWatch(cluster)
    try:
        watch.sync(victim)
        jobs_before = cluster.cli_json("job", "list")
        tree_before = state_tree(cluster)
        assert "pki/agents/pending/newbie" in tree_before
        rejected_before = rejected_frames(cluster)

        expected: dict[str, int] = {}
        answered: dict[str, set[bytes]] = {"newbie": set(), "stranger": set()}
        for peer in (newbie, stranger):
            for message in one_of_every_request(peer.agent_id, jid):
                for frame, reason, refused in forgeries(peer, message):
                    peer.send_frame(frame)
                    expected[reason] = expected.get(reason, 0) + 1
                    if refused:
                        answered[peer.agent_id].add(decode(decode(frame, Outer).signed, SignedHeader).nonce)
        total = sum(expected.values())
        for reason, n in expected.items():
            wait_lines(cluster, rf"{REJECTED} \S+: {reason}", n)
        wait_until(lambda: rejected_frames(cluster) >= rejected_before + total, what="the rejection counter")
        assert rejected_frames(cluster) == rejected_before + total

        # The correctly signed ones were answered "key not accepted", each to its own request; nothing else was.
        for peer in (newbie, stranger):
            replies = []
            while (got := peer.recv(timeout=1.0)) is not None:
                replies.append(got)
            assert {h.reply_to for h, _ in replies} == answered[peer.agent_id]
            assert all(isinstance(m, Refused) and m.reason == "key not accepted" for _, m in replies), replies

        # The same requests from the accepted agent, after all that on the same channel, are served.
        for message in one_of_every_request("victim", jid):
            reply = victim.reply_to(victim.send(message))
            wanted = {Heartbeat.KIND: Ack, "returns": Ack, "events": Ack, FileStat.KIND: FileInfo,
                      FileRead.KIND: FileData, CertRequest.KIND: CertIssued, CrlRequest.KIND: CrlData}
            assert isinstance(reply, wanted[message.KIND]), (message.KIND, reply)
        watch.wait_tag(f"saltmarsh/job/{jid}/ret/victim")
        watch.wait_tag("saltmarsh/pki/victim/cert/issued")

        # No job, no return, no event and no file came of any refused frame.
        assert list(cluster.cli_json("job", "show", jid)["returns"]) == ["victim"]
        # (the only jobs there could be since: the master's own inventory refresh, which it now does
        # with a pushed digest rather than a job, master/agents/resync.py)
        before_jids = {j["jid"] for j in jobs_before}
        new_jobs = [j for j in cluster.cli_json("job", "list") if j["jid"] not in before_jids]
        assert all(j["fun"] == "virt.full_info" and j["target"]["ids"] == ["victim"] for j in new_jobs), new_jobs
        foreign = [t for t in watch.tags() if "newbie" in t or "stranger" in t]
        assert foreign == [], foreign
        tree_after = state_tree(cluster)
        new_paths = sorted(set(tree_after) - set(tree_before))
        # The victim's certificates, and the record that the accepted victim was sent a manifest; nothing else.
        assert all(p.startswith("pki/ca/") or p == SERVED_RECORDS for p in new_paths), new_paths
        changed = [p for p in tree_before if tree_after.get(p, b"gone") != tree_before[p]]
        assert all(p.startswith("pki/ca/") or p == SERVED_RECORDS for p in changed), changed
        served = json.loads((cluster.master_dir / "state" / SERVED_RECORDS).read_text())["agents"]
        assert set(served) == {"victim"}, served  # no refused peer was recorded
        issued = cluster.cli_json("pki", "status")["certificates"]
        assert {c["agent"] for c in issued} == {"victim"}, issued
        assert cluster.cli_json("key", "list") == {"accepted": ["victim"], "pending": ["newbie"], "rejected": []}
        log = cluster.master.log()
        assert "Traceback" not in log and "failed inside the master" not in log
    finally:
        watch.close()


UNSAFE_IDS = ["../x", "a/b", "x" * 300, "a\nFORGED line", "a\x00b", "", ".", "..", ".hidden", "-dash", "a b",
              "a\\b", "caf\u00e9", "\u202egnp.x", "/abs"]


def test_unsafe_agent_ids_are_refused_before_the_key_store(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    victim = register_raw_agent(cluster, zctx, "victim")
    watch = EventWatch(cluster)
    try:
        watch.sync(victim)
        keys_before = key_files(cluster)
        tree_before = state_tree(cluster)
        rejected_before = rejected_frames(cluster)
        peer = RawAgent(zctx, cluster.request_port, Identity.generate(), "unused", victim.master_public)
        for agent_id in UNSAFE_IDS:
            hello, _ = request_frame(peer.identity, agent_id, Hello(labels={"x": "y"}), victim.master_public)
            peer.send_frame(hello)
            returns, _ = request_frame(peer.identity, agent_id, returns_message("2" * 20, 1), victim.master_public,
                                       present_key=True)
            peer.send_frame(returns)
        # Over the envelope's 128 characters or empty: refused by its schema, before the id is even read.
        by_schema = sum(1 for a in UNSAFE_IDS if not 1 <= len(a) <= 128)
        wait_lines(cluster, rf"{REJECTED} \S+: envelope violates its schema", 2 * by_schema)
        wait_lines(cluster, rf"{REJECTED} \S+: agent id .* is not a safe name", 2 * (len(UNSAFE_IDS) - by_schema))
        wait_until(lambda: rejected_frames(cluster) >= rejected_before + 2 * len(UNSAFE_IDS),
                   what="the rejection counter")
        assert rejected_frames(cluster) == rejected_before + 2 * len(UNSAFE_IDS)
        assert peer.recv(timeout=1.0) is None, "an unsafe id got an answer"
        # Still one line each: the id is quoted, so a newline in it cannot forge a log line.
        assert not [line for line in cluster.master.log().splitlines() if line.startswith("FORGED")]
        assert key_files(cluster) == keys_before
        assert state_tree(cluster) == tree_before
        assert isinstance(victim.reply_to(victim.send(events_message("after/unsafe-ids"))), Ack)
        watch.wait_tag("after/unsafe-ids")
        assert [t for t in watch.tags() if t.startswith("saltmarsh/key/")] == []
    finally:
        watch.close()


def test_a_hello_whose_field_name_is_not_utf8_is_refused_not_failed(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    # Found by fuzz/fuzz_envelope.py: msgspec raised UnicodeDecodeError (not its DecodeError) for
    # such a field name, so any key could make the master fail inside with a traceback per frame.
    pub = master_identity(cluster.master_dir).public_key
    peer = RawAgent(zctx, cluster.request_port, Identity.generate(), "odd", pub)
    for body in (b"\x81\xa2\x80\x80\x90", b"\x81\xa4lab\xff\x80"):
        frame, _ = handmade_frame(peer.identity, "odd", Hello.KIND, body, ts=time.time(), present_key=True)
        peer.send_frame(frame)
    # Our own reasons only: which of the two msgspec reports (and its words) differs between releases.
    wait_lines(cluster, rf"{REJECTED} \S+: hello body (has a field name that is not UTF-8|is not valid msgpack): ", 2)
    log = cluster.master.log()
    assert "Traceback" not in log and "failed inside the master" not in log
    assert key_files(cluster) == [] and cluster.pending() == []
    assert isinstance(peer.reply_to(peer.send(Hello())), Welcome)  # the same key, well-formed: served


# ---- CVE-2020-11652: paths ----------------------------------------------------------------


TRAVERSALS = [
    "../outside.img",
    "/etc/passwd",
    "images/../../outside.img",
    "images/./../../outside.img",
    "link-out/passwd",  # a directory symlink leaving the root
    "images/link-file",  # a file symlink leaving the root
    "images/base.img\x00.png",
    "\x00",
    "images/a\nFORGED line",
    "images",  # a directory, not a file
    ".",
    "images/missing.img",
    "//etc/passwd",
]


def test_file_requests_outside_the_roots_are_refused_and_logged(served: Cluster, zctx: zmq.Context[Any]) -> None:
    cluster = served
    agent = register_raw_agent(cluster, zctx, "hv1")
    info = agent.reply_to(agent.send(FileStat(path="images/base.img")))
    assert isinstance(info, FileInfo) and info.size == len(IMAGE)
    refused_before = count(cluster.master, "refused file request from hv1")
    replies: list[Message] = []
    for path in TRAVERSALS:
        replies.append(agent.reply_to(agent.send(FileStat(path=path))))
        replies.append(agent.reply_to(agent.send(FileRead(path=path, index=0))))
    # past the end of a real file, up to the largest index msgpack carries
    for index in (1, 2**31, 2**63, 2**64 - 1):
        replies.append(agent.reply_to(agent.send(FileRead(path="images/base.img", index=index))))
    assert all(isinstance(r, Failed) for r in replies), [r for r in replies if not isinstance(r, Failed)]
    assert not any(SECRET.decode() in r.reason or "root:" in r.reason for r in replies if isinstance(r, Failed))
    n = len(replies)
    wait_until(lambda: count(cluster.master, "refused file request from hv1") >= refused_before + n,
               what="a logged reason for each refused file request")
    assert count(cluster.master, "refused file request from hv1") == refused_before + n
    log = cluster.master.log()
    assert "Traceback" not in log and "failed inside the master" not in log
    assert not [line for line in log.splitlines() if line.startswith("FORGED")]
    # An empty path does not even decode.
    body = box(agent.identity, agent.master_public).encrypt(encode({"path": ""}))
    empty, _ = handmade_frame(agent.identity, "hv1", FileStat.KIND, body, ts=time.time())
    agent.send_frame(empty)
    wait_lines(cluster, rf"{REJECTED} \S+: file_stat body violates its schema", 1)
    # and the real file is still served, chunk by chunk
    data = agent.reply_to(agent.send(FileRead(path="images/base.img", index=0)))
    assert isinstance(data, FileData) and data.data == IMAGE


def test_key_commands_refuse_ids_that_are_not_safe_names(cluster: Cluster) -> None:
    cluster.cli("key", "token", "fine")  # a token for a safe id is issued
    tree_before = state_tree(cluster)
    refused = 0
    for bad in ("../x", "a/b", "..", ".", "x" * 300, "a\x01b", "/etc/passwd"):
        for action in ("accept", "reject", "delete", "token"):
            result = cluster.cli("key", action, bad, check=False)
            assert result.returncode != 0, (action, bad, result.stdout)
            assert "not a safe name" in result.stderr or "more than 128" in result.stderr, result.stderr
            refused += 1
        finger = cluster.cli("key", "finger", bad, check=False)
        assert finger.returncode != 0 and "no key for agent" in finger.stderr
    wait_lines(cluster, r"refused key (command|token): agent id .*(not a safe name|more than 128)", refused)
    assert state_tree(cluster) == tree_before
    assert cluster.cli_json("key", "list") == {"accepted": [], "pending": [], "rejected": []}


def test_certificate_requests_for_foreign_or_path_names_are_refused(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    agent = register_raw_agent(cluster, zctx, "hv1")
    ca_dir = cluster.master_dir / "state" / "pki" / "ca"
    index_before = sorted(p.name for p in ca_dir.iterdir())
    for names in (["../x"], ["hv1", "../../etc/passwd"], ["a/b"], ["hv2"], ["hv1", "*"]):
        csr = build_csr(new_key(), names)
        reply = agent.reply_to(agent.send(CertRequest(server_csr=csr, client_csr=csr)))
        assert isinstance(reply, Failed) and "which it may not use" in reply.reason, reply
    garbage = agent.reply_to(agent.send(CertRequest(server_csr=b"-----BEGIN ../x", client_csr=b"")))
    assert isinstance(garbage, Failed) and "malformed CSR from hv1" in garbage.reason
    wait_lines(cluster, r"refused certificate request: ", 6)
    assert sorted(p.name for p in ca_dir.iterdir()) == index_before
    assert cluster.cli_json("pki", "status")["certificates"] == []
