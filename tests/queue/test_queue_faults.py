"""Failure and limit behaviour of the queue service, on real processes.

An instance SIGKILLed with work in flight, a full input queue, a full sink, results past their
time to live, dead letters listed and retried.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import requests

from tests.queue.harness import make_env


def test_killed_instance_loses_nothing(tmp_path: Path, backend_kind: str, redis_url_for: str) -> None:
    env = make_env(tmp_path, "killsvc", worker_threads=4, redis_url=redis_url_for)
    try:
        victim = env.add_worker(delay=0.5)
        survivor = env.add_worker(delay=0.5)
        env.start_server()
        rids = [env.put(f"job-{i}".encode()).headers["X-Eas-Queueservice-Request-Id"] for i in range(24)]
        env.wait_for("work in flight on the victim", lambda: len(victim.deliveries()) >= 4, 20)
        victim.proc.send_signal(signal.SIGKILL)  # the registry still lists it: the dispatcher must cope
        env.wait_for("every result", lambda: env.stats()["sink"]["length"] >= 24, 60)
        time.sleep(1.0)  # a late duplicate would land now
        got = env.sink_get(_index_="0", _length_="100", _auto_delete_="false").json()
        ids = [g["tags"]["requestId"] for g in got]
        assert sorted(ids) == sorted(rids), "every request has exactly one result"
        assert all(g["tags"]["lastCode"] == "200" for g in got)
        delivered = victim.deliveries() + survivor.deliveries()
        stats = env.stats()
        # the victim's unfinished requests were delivered again, and that was counted
        assert len(delivered) > 24 and stats["counters"]["redelivered"] >= 1
        assert stats["counters"]["dead"] == 0 and stats["input"]["length"] == 0
    finally:
        env.close()


def test_input_full_answers_429(tmp_path: Path, backend_kind: str, redis_url_for: str) -> None:
    env = make_env(tmp_path, "fullsvc", queue={"source": {"max_length": 3}}, redis_url=redis_url_for)
    try:
        env.start_server()  # no instance: nothing drains the queue
        assert [env.put(b"x").status_code for _ in range(3)] == [200, 200, 200]
        resp = env.put(b"x")
        assert resp.status_code == 429
        msg = resp.json()["message"]
        assert "full" in msg and "queue.source.max_length" in msg and "3 items" in msg
        metrics = requests.get(env.admin + "/metrics", timeout=10).text
        assert 'openeas_queue_length{service="fullsvc",queue="input"} 3' in metrics
        assert 'openeas_queue_rejected_total{service="fullsvc"} 1' in metrics
        age = next(
            line for line in metrics.splitlines() if line.startswith("openeas_queue_oldest_age_seconds")
        )
        assert 'queue="input"' in age and float(age.split()[-1]) > 0
        big = env.put(b"y" * (8192 * 1024 + 1))
        assert big.status_code == 413 and "max_payload_size_kb" in big.json()["message"]
    finally:
        env.close()


def test_full_sink_pauses_dispatch(tmp_path: Path, backend_kind: str, redis_url_for: str) -> None:
    env = make_env(
        tmp_path, "sinksvc", queue={"sink": {"max_length": 4}}, worker_threads=2, redis_url=redis_url_for
    )
    try:
        worker = env.add_worker(delay=0.05)
        env.start_server()
        for i in range(10):
            assert env.put(f"j{i}".encode()).status_code == 200
        env.wait_for("a full sink", lambda: env.stats()["sink"]["length"] >= 4, 30)
        time.sleep(1.5)  # the worker is fast: had dispatch continued, all 10 would be done now
        stats = env.stats()
        assert stats["sink"]["length"] == 4 and stats["input"]["length"] == 6
        assert len(worker.deliveries()) == 4
        # drain the sink: work resumes
        drained = 0
        deadline = time.monotonic() + 60
        while drained < 10 and time.monotonic() < deadline:
            resp = env.sink_get(_index_="0", _length_="10", _timeout_="2s", _auto_delete_="true")
            if resp.status_code == 200:
                drained += len(resp.json())
        assert drained == 10
        assert len(worker.deliveries()) == 10
    finally:
        env.close()


def test_results_expire(tmp_path: Path, backend_kind: str, redis_url_for: str) -> None:
    env = make_env(tmp_path, "ttlsvc", queue={"sink": {"ttl": "2s"}}, redis_url=redis_url_for)
    try:
        env.add_worker(delay=0.0)
        env.start_server()
        rid = env.put(b"short-lived").headers["X-Eas-Queueservice-Request-Id"]
        first = env.sink_get(requestId=rid, _timeout_="10s", _auto_delete_="false")
        assert first.status_code == 200 and first.json()[0]["tags"]["requestId"] == rid
        env.wait_for("the result to expire", lambda: env.stats()["sink"]["length"] == 0, 15)
        assert env.sink_get(requestId=rid, _timeout_="0s").status_code == 204
        assert env.stats()["counters"]["expired"] == 1
    finally:
        env.close()


def test_dead_letters_listed_and_retried(tmp_path: Path, backend_kind: str, redis_url_for: str) -> None:
    env = make_env(tmp_path, "deadsvc", queue={"max_delivery": 2}, redis_url=redis_url_for)
    try:
        worker = env.add_worker(delay=0.0)
        env.start_server()
        ok = env.put(b"fine").headers["X-Eas-Queueservice-Request-Id"]
        bad = env.put(b"bad input").headers["X-Eas-Queueservice-Request-Id"]
        doomed = env.put(b"fail always").headers["X-Eas-Queueservice-Request-Id"]
        env.wait_for("a dead letter", lambda: env.stats()["input"]["dead"] == 1, 30)
        dead = requests.get(env.admin + "/_queue/dead", timeout=10).json()
        assert [(d["tags"]["requestId"], d["deliveries"]) for d in dead] == [(doomed, 2)]
        assert worker.deliveries().count(doomed) == 2
        codes = {g["tags"]["requestId"]: g["tags"]["lastCode"] for g in env.sink_get(_length_="10").json()}
        assert codes == {ok: "200", bad: "400"}  # a 4xx is a final answer, not a failure
        resp = requests.post(env.admin + "/_queue/retry", json={"indexes": [dead[0]["index"]]}, timeout=10)
        assert resp.json() == {"retried": 1}
        env.wait_for("a second dead letter round", lambda: worker.deliveries().count(doomed) == 4, 30)
        env.wait_for("dead again", lambda: env.stats()["input"]["dead"] == 1, 30)
        assert env.stats()["counters"]["dead"] == 2
    finally:
        env.close()


def test_queue_server_killed_mid_work(tmp_path: Path, backend_kind: str, redis_url_for: str) -> None:
    """The queue server itself dies (SIGKILL) with requests in flight; the next one (same
    registry, same backend) delivers them again at once: every request gets exactly one result."""
    env = make_env(tmp_path, "crashsvc", worker_threads=4, redis_url=redis_url_for)
    try:
        worker = env.add_worker(delay=0.5)
        env.start_server()
        rids = [env.put(f"job-{i}".encode()).headers["X-Eas-Queueservice-Request-Id"] for i in range(12)]
        env.wait_for("work in flight", lambda: len(worker.deliveries()) >= 4, 20)
        assert env.server is not None
        env.server.send_signal(signal.SIGKILL)
        env.server.wait(10)
        env.start_server()  # a new process, as the control plane's supervisor would start
        # well before the dead server's leases (keepalive 30 s + 15 s) would have run out
        env.wait_for("every result", lambda: env.stats()["sink"]["length"] >= 12, 25)
        time.sleep(1.0)
        got = env.sink_get(_index_="0", _length_="100", _auto_delete_="false").json()
        assert sorted(g["tags"]["requestId"] for g in got) == sorted(rids)
        assert env.stats()["input"]["length"] == 0
    finally:
        env.close()
