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

Also the bounds on what peers that are not accepted can cost the master: the
pending keys a flood of fresh ids may create, the replay caches, the log lines
garbage may write, and the X25519 Boxes kept for keys seen once.

Covered elsewhere and not repeated here: returns, events and heartbeat from a
pending and an unknown key (tests/test_security.py,
test_an_unaccepted_key_may_only_submit_itself, extended below to every kind
and to bad signatures); master:// images leaving the root through the agent's
image cache (tests/test_images.py, test_paths_leaving_the_root_are_refused_and_logged);
malformed envelopes, headers and bodies of every shape (tests/test_bounded_input.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from saltmarsh.master.client import MasterClient
from saltmarsh.master.request_channel import MAX_CIPHERS, RequestChannel
from saltmarsh.pki.csr import build_csr, new_key
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.envelope import Outer, SignedHeader, parse_outer, verify
from saltmarsh.protocol.errors import ReplayedFrame
from saltmarsh.protocol.freshness import ReplayGuard
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import (
    REPLY_KINDS,
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
from saltmarsh.protocol.ratelimit import DEFAULT_BURST, LogRateLimit

from .cluster import Cluster, wait_until
from .wire import (
    REJECTED,
    EventWatch,
    RawAgent,
    box,
    count,
    events_message,
    flip_byte,
    handmade_frame,
    lines,
    master_identity,
    register_raw_agent,
    request_frame,
    returns_message,
    silent_job,
)

IMAGE = b"image bytes " * 1000
SECRET = b"outside-the-root secret"


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for the test's own sockets."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _show_logs_on_failure(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        print(f"----- master log -----\n{cluster.master.log()[-8000:]}")


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
        _show_logs_on_failure(cluster, request)


def state_tree(cluster: Cluster) -> dict[str, bytes | None]:
    """Every path under the master's root_dir with its content (the job cache only by name: it changes alone)."""
    root = cluster.master_dir / "state"
    tree: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        keep = path.is_file() and not path.is_symlink() and not path.name.startswith("jobs.sqlite")
        tree[name] = path.read_bytes() if keep else None
    return tree


def key_files(cluster: Cluster) -> list[str]:
    """Every file under the key store, as paths relative to it."""
    keys = cluster.master_dir / "state" / "pki" / "agents"
    return sorted(str(p.relative_to(keys)) for p in keys.rglob("*") if not p.is_dir())


def rejected_frames(cluster: Cluster) -> int:
    """The master's count of refused frames (every one, logged or not)."""
    with MasterClient.from_config_dir(cluster.master_dir) as client:
        return int(client.call("master.ping")["rejected_frames"])


def wait_lines(cluster: Cluster, pattern: str, n: int, timeout: float = 15.0) -> list[str]:
    """Wait until ``n`` master log lines match ``pattern``; fail if more do."""
    wait_until(lambda: len(lines(cluster.master, pattern)) >= n, timeout=timeout,
               what=f"{n} master log lines matching {pattern!r}")
    found = lines(cluster.master, pattern)
    assert len(found) == n, f"{len(found)} lines match {pattern!r}, expected {n}:\n" + "\n".join(found)
    return found


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
        # (the only jobs since: the master's own inventory refresh each time the accepted agent came up)
        before_jids = {j["jid"] for j in jobs_before}
        new_jobs = [j for j in cluster.cli_json("job", "list") if j["jid"] not in before_jids]
        assert all(j["fun"] == "virt.full_info" and j["target"]["ids"] == ["victim"] for j in new_jobs), new_jobs
        foreign = [t for t in watch.tags() if "newbie" in t or "stranger" in t]
        assert foreign == [], foreign
        tree_after = state_tree(cluster)
        new_paths = sorted(set(tree_after) - set(tree_before))
        assert all(p.startswith("pki/ca/") for p in new_paths), new_paths  # victim's certificates only
        changed = [p for p in tree_before if tree_after.get(p, b"gone") != tree_before[p]]
        assert all(p.startswith("pki/ca/") for p in changed), changed
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
    wait_lines(cluster, rf"{REJECTED} \S+: hello body has a field name that is not UTF-8: ", 2)
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


# ---- bounds on what peers that are not accepted can cost ------------------------------------


def _drain(socket: zmq.Socket[Any], identities: dict[bytes, Identity], pub: bytes,
           n: int, timeout: float = 30.0) -> dict[bytes, Message]:
    """Read ``n`` replies on a DEALER shared by many keys: {request nonce: reply}."""
    got: dict[bytes, Message] = {}
    deadline = time.monotonic() + timeout
    while len(got) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and socket.poll(int(remaining * 1000)), f"{len(got)} of {n} replies"
        header = verify(parse_outer(socket.recv(), Limits()), pub)
        plain = box(identities[header.reply_to], pub).decrypt(header.body)
        got[header.reply_to] = decode(plain, REPLY_KINDS[header.kind], header.kind)
    return got


@pytest.mark.timeout(180)
def test_a_flood_of_fresh_ids_stops_at_max_pending_keys(tmp_path: Path, zctx: zmq.Context[Any],
                                                        request: pytest.FixtureRequest) -> None:
    cap, flood = 5, DEFAULT_BURST + 100
    cluster = Cluster(tmp_path, max_pending_keys=cap)
    try:
        cluster.start_master()
        pub = master_identity(cluster.master_dir).public_key
        victim = register_raw_agent(cluster, zctx, "victim")  # pending, then accepted: room for 5 more
        watch = EventWatch(cluster)
        watch.sync(victim)
        dealer = zctx.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{cluster.request_port}")
        identities: dict[bytes, Identity] = {}
        order = []
        started = time.monotonic()
        for i in range(flood):
            identity = Identity.generate()
            frame, nonce = request_frame(identity, f"flood{i:04d}", Hello(), pub)
            identities[nonce] = identity
            order.append(nonce)
            dealer.send(frame)
        replies = _drain(dealer, identities, pub, flood)
        elapsed = time.monotonic() - started
        kinds = [type(replies[n]).__name__ for n in order]
        assert kinds == ["Welcome"] * cap + ["Refused"] * (flood - cap), kinds
        welcomed = [replies[n] for n in order[:cap]]
        refused = [replies[n] for n in order[cap:]]
        assert all(isinstance(w, Welcome) and w.state == "pending" for w in welcomed)
        assert {r.reason for r in refused if isinstance(r, Refused)} == {
            "too many keys are pending on the master; try again later"}
        assert cluster.pending() == [f"flood{i:04d}" for i in range(cap)]
        assert sorted(key_files(cluster)) == sorted(["accepted/victim"] + [f"pending/flood{i:04d}" for i in range(cap)])

        # Every refusal has its reason up to the burst; past it, about a line a second.
        refusal = r"refused key submission from \S+: 5 keys are already pending \(max_pending_keys\)"
        logged = len(lines(cluster.master, refusal))
        assert DEFAULT_BURST <= logged <= DEFAULT_BURST + elapsed + 2, (logged, elapsed)
        assert logged < flood - cap
        time.sleep(1.1)
        late = Identity.generate()
        frame, nonce = request_frame(late, "late", Hello(), pub)
        identities[nonce] = late
        dealer.send(frame)
        assert isinstance(_drain(dealer, identities, pub, 1)[nonce], Refused)
        wait_lines(cluster, r"\d+ more lines like the next \(pending-cap\) were not logged", 1)
        assert len(lines(cluster.master, refusal)) == logged + 1

        # An id already pending is still answered as pending; deleting one makes room for one more.
        first = identities[order[0]]
        frame, nonce = request_frame(first, "flood0000", Hello(), pub)
        identities[nonce] = first
        dealer.send(frame)
        again = _drain(dealer, identities, pub, 1)[nonce]
        assert isinstance(again, Welcome) and again.state == "pending"
        cluster.cli("key", "delete", "flood0001")
        newcomer = register_raw_agent(cluster, zctx, "newcomer", accept=False)
        assert cluster.pending() == ["flood0000", "flood0002", "flood0003", "flood0004", "newcomer"]
        pending_events = [t for t in watch.tags() if t.endswith("/pending")]
        assert len(pending_events) == cap + 1, pending_events  # five from the flood, newcomer's
        assert isinstance(victim.reply_to(victim.send(Heartbeat())), Ack)
        newcomer.close()
        watch.close()
        dealer.close(linger=0)
    finally:
        cluster.stop()
        _show_logs_on_failure(cluster, request)


def test_replay_caches_are_bounded_and_key_submissions_have_their_own(
    tmp_path: Path, zctx: zmq.Context[Any], request: pytest.FixtureRequest,
) -> None:
    size = 16
    cluster = Cluster(tmp_path, max_replay_nonces=size)
    try:
        cluster.start_master()
        pub = master_identity(cluster.master_dir).public_key
        victim = register_raw_agent(cluster, zctx, "victim")  # one hello in each cache
        full = r"replay cache is full \(16 nonces inside the window\)"
        # 15 more key submissions fill the submissions' cache; the 16th fresh one is refused unrecorded.
        for i in range(size - 1):
            assert isinstance(register_raw_agent(cluster, zctx, f"new{i}", accept=False), RawAgent)
        extra = RawAgent(zctx, cluster.request_port, Identity.generate(), "one-too-many", pub)
        extra.send(Hello())
        wait_lines(cluster, rf"{REJECTED} \S+: {full}: cannot record the nonce from one-too-many", 1)
        assert extra.recv(timeout=0.5) is None
        assert "one-too-many" not in cluster.pending()
        # The accepted agent's frames go to the other cache: served until that one is full too.
        for _ in range(size - 1):
            assert isinstance(victim.reply_to(victim.send(Heartbeat())), Ack)
        victim.send(Heartbeat())
        wait_lines(cluster, rf"{REJECTED} \S+: {full}: cannot record the nonce from victim", 1)
        assert victim.recv(timeout=0.5) is None
        assert cluster.master.alive()
    finally:
        cluster.stop()
        _show_logs_on_failure(cluster, request)


def test_replay_guard_refuses_what_it_cannot_record_and_recovers_as_nonces_expire() -> None:
    now = [1000.0]
    guard = ReplayGuard(60, clock=lambda: now[0], max_entries=3)
    for n in (b"a", b"b", b"c"):
        guard.check("hv1", now[0], n * 16)
    with pytest.raises(ReplayedFrame, match="replay cache is full"):
        guard.check("hv1", now[0], b"d" * 16)
    with pytest.raises(ReplayedFrame, match="was already seen"):
        guard.check("hv1", now[0], b"a" * 16)  # a real replay is still named as one
    assert len(guard) == 3
    now[0] += 121  # twice the window: the first three expire, room again
    guard.check("hv1", now[0], b"d" * 16)
    assert len(guard) == 1
    # Entries cost the same whatever the sender's name: a digest of (sender, nonce).
    guard.check("h" * 128, now[0], b"e" * 16)
    guard.check("h" * 127, now[0], b"h" + b"e" * 15)  # same bytes once joined: still two entries
    assert len(guard) == 3


@pytest.mark.timeout(180)
def test_garbage_costs_a_bounded_number_of_log_lines(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    victim = register_raw_agent(cluster, zctx, "victim")
    before_lines = count(cluster.master, REJECTED)
    before = rejected_frames(cluster)
    size_before = cluster.master.log_path.stat().st_size
    flood = DEFAULT_BURST * 3
    garbage = zctx.socket(zmq.DEALER)
    garbage.connect(f"tcp://127.0.0.1:{cluster.request_port}")
    started = time.monotonic()
    for i in range(flood):
        garbage.send(b"\xc1" + hashlib.sha256(str(i).encode()).digest() * 30)
    wait_until(lambda: rejected_frames(cluster) >= before + flood, timeout=30, what="every frame to be counted")
    elapsed = time.monotonic() - started
    assert rejected_frames(cluster) == before + flood, "a frame was not counted"
    logged = count(cluster.master, REJECTED) - before_lines
    assert DEFAULT_BURST <= logged <= DEFAULT_BURST + elapsed + 2, (logged, elapsed)
    # each line is short: the log grew by far less than the garbage sent
    assert cluster.master.log_path.stat().st_size - size_before < (DEFAULT_BURST + elapsed + 2) * 300
    time.sleep(1.1)
    garbage.send(b"\xc1")
    wait_lines(cluster, r"\d+ more lines like the next \(MalformedFrame\) were not logged in the last \d+ s", 1)
    # other reasons have buckets of their own, and real work goes on
    assert isinstance(victim.reply_to(victim.send(Heartbeat())), Ack)
    stranger = RawAgent(zctx, cluster.request_port, Identity.generate(), "stranger", victim.master_public)
    stranger.send(Heartbeat())
    wait_lines(cluster, rf"{REJECTED} \S+: no accepted key for 'stranger' and none presented", 1)
    garbage.close(linger=0)


def test_log_rate_limit_per_reason() -> None:
    import logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test_log_rate_limit_per_reason")
    logger.propagate = False
    logger.addHandler(Keep())
    now = [0.0]
    limit = LogRateLimit(logger, burst=3, per_second=0.5, clock=lambda: now[0])
    assert [limit.warning("a", "a %d", i) for i in range(5)] == [True, True, True, False, False]
    assert limit.warning("b", "b") is True  # another reason, another bucket
    now[0] += 2.0  # one token back
    assert limit.warning("a", "a late") is True
    assert records == ["a 0", "a 1", "a 2", "b", "2 more lines like the next (a) were not logged in the last 2 s",
                       "a late"]
    assert limit.suppressed == 2


def test_boxes_kept_for_keys_are_bounded() -> None:
    ctx = zmq.asyncio.Context()
    try:
        channel = RequestChannel(ctx, Identity.generate(), lambda agent_id: None, Limits())
        keep = Identity.generate().public_key
        channel.peer_cipher(keep)
        for _ in range(MAX_CIPHERS + 50):
            channel.peer_cipher(Identity.generate().public_key)
            channel.peer_cipher(keep)  # in use: never the one evicted
        assert len(channel._ciphers) == MAX_CIPHERS
        assert keep in channel._ciphers
        channel.close()
    finally:
        ctx.term()
