"""The job cache (master/store/jobcache.py) in-process, on a real SQLite file: jobs, returns, agents, event marks.

And the group commit of returns (master/jobs/groupcommit.py) over it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from saltmarsh.master.store.jobcache import AgentRecord, JobCache
from saltmarsh.protocol.jids import new_jid
from saltmarsh.protocol.messages import ErrorInfo, Job, JobReturn, Target


def _job(fun: str = "test.ping", **kwargs: object) -> Job:
    return Job(jid=new_jid(), fun=fun, target=Target(kind="list", ids=["hv1", "hv2"]), kwargs=dict(kwargs),
               timeout=7.0)


def _ret(jid: str, result: object = True) -> JobReturn:
    return JobReturn(jid=jid, fun="test.ping", success=True, result=result, duration=0.01)


@pytest.mark.timeout(10)
def test_a_job_and_its_expected_agents_round_trip(tmp_path: Path) -> None:
    cache = JobCache(tmp_path / "c.sqlite")
    job = _job(message="hi")
    cache.add_job(job, ["hv2", "hv1"])
    record = cache.get_job(job.jid)
    assert record is not None and record.job == job
    assert record.expected == ["hv1", "hv2"]  # sorted
    assert abs(record.created - time.time()) < 60
    assert cache.get_job(new_jid()) is None


@pytest.mark.timeout(10)
def test_returns_are_stored_once_and_only_from_expected_agents(tmp_path: Path) -> None:
    cache = JobCache(tmp_path / "c.sqlite")
    job = _job()
    cache.add_job(job, ["hv1", "hv2"])
    other = new_jid()
    fresh, unexpected = cache.add_returns("hv1", [_ret(job.jid), _ret(other)])
    assert [r.jid for r in fresh] == [job.jid] and unexpected == [other]
    again, _ = cache.add_returns("hv1", [_ret(job.jid, "changed")])  # a duplicate (jid, agent) is ignored
    assert again == []
    _, foreign = cache.add_returns("intruder", [_ret(job.jid)])
    assert foreign == [job.jid]
    failed = JobReturn(jid=job.jid, fun="test.ping", success=False, error=ErrorInfo(type="TimedOut", message="late"))
    cache.add_returns("hv2", [failed])
    stored = cache.returns(job.jid)
    assert list(stored) == ["hv1", "hv2"]
    assert stored["hv1"].result is True and stored["hv2"].error == ErrorInfo(type="TimedOut", message="late")


@pytest.mark.timeout(10)
def test_list_counts_and_purge(tmp_path: Path) -> None:
    cache = JobCache(tmp_path / "c.sqlite")
    jobs = [_job() for _ in range(3)]
    for job in jobs:
        cache.add_job(job, ["hv1", "hv2"])
    cache.add_returns("hv1", [_ret(jobs[1].jid)])
    listed = cache.list_jobs(2)
    assert [j["jid"] for j in listed] == [jobs[2].jid, jobs[1].jid]  # newest first, at most the limit
    assert (listed[1]["expected"], listed[1]["returned"]) == (2, 1)
    assert listed[0]["target"] == {"kind": "list", "ids": ["hv1", "hv2"], "pattern": "", "labels": {}}
    assert cache.purge_older_than(1.0) == 0
    cache.db.execute("UPDATE jobs SET created = created - 7200 WHERE jid = ?", (jobs[1].jid,))
    assert cache.purge_older_than(1.0) == 1
    assert cache.get_job(jobs[1].jid) is None and cache.returns(jobs[1].jid) == {}
    assert cache.get_job(jobs[0].jid) is not None


@pytest.mark.timeout(10)
def test_agents_and_event_marks_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = JobCache(path)
    cache.save_agent(AgentRecord("hv1", {"zone": "a"}, "1.0", 10.0, 20.0, None))
    cache.save_agent(AgentRecord("hv2", {}, "1.0", 11.0, 12.0, 13.0))
    cache.save_last_seen({"hv1": 30.0})
    cache.save_event_marks("hv1", 99, 1234, [1236, 1240])
    cache.close()
    cache = JobCache(path)
    assert cache.agents() == [AgentRecord("hv1", {"zone": "a"}, "1.0", 10.0, 30.0, None),
                              AgentRecord("hv2", {}, "1.0", 11.0, 12.0, 13.0)]
    assert cache.event_marks("hv1") == (99, 1234, [1236, 1240]) and cache.event_marks("hv2") is None
    cache.forget_agent("hv2")
    assert [a.agent_id for a in cache.agents()] == ["hv1"]


@pytest.mark.timeout(10)
def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    cache = JobCache(tmp_path / "c.sqlite")
    job = _job()
    with pytest.raises(RuntimeError), cache.transaction() as db:
        db.execute("INSERT INTO expected VALUES (?, ?)", (job.jid, "hv1"))
        raise RuntimeError("crash half-way")
    assert cache.add_returns("hv1", [_ret(job.jid)]) == ([], [job.jid])


@pytest.mark.timeout(10)
def test_returns_of_one_turn_of_the_loop_share_one_transaction(tmp_path: Path) -> None:
    from saltmarsh.master.jobs.groupcommit import ReturnCommits

    cache = JobCache(tmp_path / "c.sqlite")
    job = _job()
    cache.add_job(job, ["hv1", "hv2"])
    commits = ReturnCommits(cache)

    async def three_at_once() -> list[tuple[list[JobReturn], list[str]]]:
        return list(await asyncio.gather(commits.add("hv1", [_ret(job.jid)]), commits.add("hv2", [_ret(job.jid)]),
                                         commits.add("hv9", [_ret(job.jid)])))

    results = asyncio.run(three_at_once())
    assert [([r.jid for r in fresh], unexpected) for fresh, unexpected in results] == [
        ([job.jid], []), ([job.jid], []), ([], [job.jid])]
    assert commits.commits == 1
    assert list(cache.returns(job.jid)) == ["hv1", "hv2"]
    assert asyncio.run(commits.add("hv1", [_ret(job.jid)])) == ([], [])  # a later turn: a duplicate
    assert commits.commits == 2
