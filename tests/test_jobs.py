"""Jobs end to end: real master and agent processes, the CLI as a subprocess."""

from __future__ import annotations

import json
import threading

from saltmarsh.master.control.client import MasterClient
from saltmarsh.protocol.targeting import make_target

from .cluster import Cluster, wait_until


def test_ping_targets_id_glob_list_and_labels(cluster: Cluster) -> None:
    cluster.start_agent("hv1", labels={"role": "hv", "zone": "a"})
    cluster.start_agent("hv2", labels={"role": "hv", "zone": "b"})
    cluster.start_agent("db1", labels={"role": "db", "zone": "a"})
    cluster.accept("hv1", "hv2", "db1")

    assert cluster.cli_json("run", "hv1", "test.ping") == {"hv1": True}
    assert cluster.cli_json("run", "hv*", "test.ping") == {"hv1": True, "hv2": True}
    assert cluster.cli_json("run", "-L", "hv2,db1", "test.ping") == {"hv2": True, "db1": True}
    assert cluster.cli_json("run", "-l", "role=hv,zone=a", "test.ping") == {"hv1": True}
    assert cluster.cli_json("run", "-l", "zone=a", "test.ping") == {"hv1": True, "db1": True}
    assert cluster.cli_json("run", "*", "test.ping") == {"hv1": True, "hv2": True, "db1": True}


def test_args_kwargs_and_human_output(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    assert cluster.cli_json("run", "hv1", "test.echo", "text=42") == {"hv1": 42}
    assert cluster.cli_json("run", "hv1", "test.echo", "[1, two]") == {"hv1": [1, "two"]}
    human = cluster.cli("run", "hv1", "test.echo", "hello world").stdout
    assert human.splitlines() == ["hv1:", "    hello world"]


def test_function_error_is_structured_and_exit_nonzero(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    result = cluster.cli("run", "hv1", "test.raise_error", "message=boom", "--json", check=False)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"hv1": {"error": {"type": "RuntimeError", "message": "boom"}}}
    unknown = cluster.cli("run", "hv1", "no.such", "--json", check=False)
    assert json.loads(unknown.stdout)["hv1"]["error"]["type"] == "FunctionError"
    bad_args = cluster.cli("run", "hv1", "test.echo", "--json", check=False)
    assert "missing a required argument" in json.loads(bad_args.stdout)["hv1"]["error"]["message"]


def test_silent_agents_are_named_with_reasons(cluster: Cluster) -> None:
    cluster.start_agents("hv1", "hv2")
    # an accepted key whose agent never connected
    cluster.start_agent("ghost", master="127.0.0.1")
    wait_until(lambda: "ghost" in cluster.pending())
    cluster.agents["ghost"].stop()
    cluster.cli("key", "accept", "ghost")
    # hv2 goes away: offline after three missed 1 s heartbeats
    cluster.agents["hv2"].stop()
    wait_until(lambda: "offline since" in cluster.cli("run", "hv2", "test.ping", "--timeout", "0.5",
                                                      check=False).stderr, timeout=15)
    result = cluster.cli("run", "*", "test.sleep", "2", "--timeout", "1", check=False)
    assert result.returncode == 1
    lines = dict(line.split(": did not answer job ", 1) for line in result.stderr.strip().splitlines())
    assert set(lines) == {"hv1", "hv2", "ghost"}
    assert lines["ghost"].endswith("never connected")
    assert "offline since" in lines["hv2"]
    assert "timed out" in lines["hv1"]


def test_job_cache_list_and_show(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    cluster.cli("run", "hv1", "test.echo", "cached")
    jobs = cluster.cli_json("job", "list")
    assert jobs[0]["fun"] == "test.echo" and jobs[0]["returned"] == 1 and jobs[0]["expected"] == 1
    shown = cluster.cli_json("job", "show", jobs[0]["jid"])
    assert shown["returns"]["hv1"]["result"] == "cached"
    assert shown["expected"] == ["hv1"] and shown["silent"] == {}
    missing = cluster.cli("job", "show", "20000101000000000000", check=False)
    assert missing.returncode == 1 and "no job" in missing.stderr


def test_jobs_run_in_parallel_threads_and_are_not_run_twice(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    # Two 1.5 s sleeps at once finish in well under 3 s only if they run on worker threads
    # while the loop keeps serving; the ping between them proves the loop is not blocked.
    import subprocess
    import time

    from .cluster import BIN

    started = time.monotonic()
    sleepers = [
        subprocess.Popen([str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "run", "hv1", "test.sleep", "1.5",
                          "--json"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    assert cluster.cli_json("run", "hv1", "test.ping") == {"hv1": True}
    ping_done = time.monotonic() - started
    outputs = [json.loads(p.communicate(timeout=20)[0]) for p in sleepers]
    assert outputs == [{"hv1": True}, {"hv1": True}]
    assert ping_done < 1.5, "ping waited for a sleeping job: the loop was blocked"
    assert cluster.agents["hv1"].log().count("test.sleep") == 2


def test_no_target_match_is_an_error(cluster: Cluster) -> None:
    result = cluster.cli("run", "nobody", "test.ping", check=False)
    assert result.returncode == 1
    assert "no accepted agent matches target nobody" in result.stderr


def test_sys_functions_and_doc(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    functions = cluster.cli_json("run", "hv1", "sys.list_functions")["hv1"]
    assert {"test.ping", "test.echo", "test.sleep", "host.info", "sys.list_functions", "sys.doc",
            "event.send"} <= set(functions)
    doc = cluster.cli_json("run", "hv1", "sys.doc", "test.echo")["hv1"]
    assert doc["test.echo"].startswith("test.echo(text)")


def test_host_info_reports_libvirt_node(cluster: Cluster) -> None:
    cluster.start_agents("hv1", labels={"role": "hv"})
    info = cluster.cli_json("run", "hv1", "host.info")["hv1"]
    assert info["id"] == "hv1" and info["labels"] == {"role": "hv"}
    assert info["cpus"] >= 1 and info["memory_mib"] > 0 and info["agent_version"]
    assert info["libvirt"]["available"] is True
    assert info["libvirt"]["driver"] == "TEST" and info["libvirt"]["cpus"] == 16


def test_host_info_without_libvirt_still_answers(cluster: Cluster) -> None:
    cluster.start_agents("hv1", libvirt_uri="test:///nonexistent/file.xml")
    info = cluster.cli_json("run", "hv1", "host.info")["hv1"]
    assert info["libvirt"]["available"] is False and "open test:///nonexistent/file.xml" in info["libvirt"]["error"]


def test_a_long_lived_client_leaves_no_subscriptions_behind(cluster: Cluster) -> None:
    # One connection running many jobs (an API server, a script): each run's stream of returns
    # must end with the run, or the master's bus grows job by job.
    cluster.start_agents("hv1")
    with MasterClient(cluster.control_socket) as client:
        baseline = client.call("master.ping")["subscriptions"]
        for _ in range(20):
            assert client.run(make_target("hv1"), "test.ping", [], {}, 10.0).complete
        events = client.events("saltmarsh/job/")  # subscribes at the first next()
        pinger = threading.Timer(0.5, lambda: cluster.cli("run", "hv1", "test.ping"))
        pinger.start()
        assert next(events).tag.startswith("saltmarsh/job/")
        pinger.join()
        assert client.call("master.ping")["subscriptions"] == baseline + 1
        events.close()  # the generator ends its stream
        assert client.call("master.ping")["subscriptions"] == baseline
        # A client that never says stream.end: the run's stream ends by itself after its wait (+5 s).
        client.call("run", fun="test.ping", target=make_target("hv1"), timeout=1.0)
        assert client.call("master.ping")["subscriptions"] == baseline + 1
        wait_until(lambda: client.call("master.ping")["subscriptions"] == baseline, timeout=15,
                   what="the forgotten stream to end by itself")
