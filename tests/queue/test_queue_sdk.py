"""The official eas-prediction QueueClient, unmodified, against a real queue server and real instances.

100 requests into an Async service whose instance takes 200 ms each; the SDK watches the sink and
must receive 100 results carrying the request ids its puts returned, on both backends.
"""

from __future__ import annotations

from pathlib import Path

from tests.queue.harness import TOKEN, make_env, run_sdk

N = 100


def test_sdk_roundtrip_100(tmp_path: Path, eas_python: Path, backend_kind: str, redis_url_for: str) -> None:
    env = make_env(tmp_path, "asyncsvc", worker_threads=10, redis_url=redis_url_for)
    try:
        worker = env.add_worker(delay=0.2)
        env.start_server()
        out = run_sdk(eas_python, env.endpoint, "asyncsvc", TOKEN, "roundtrip", str(N), "10")
        sent: dict[str, str] = out["sent"]
        results = out["results"]
        assert len(sent) == N
        assert len(results) == N, f"{len(results)} results after {out['total_s']:.1f}s"
        assert {r["requestId"] for r in results} == set(sent)
        for r in results:
            assert r["lastCode"] == "200"
            assert r["data"] == "done:" + sent[r["requestId"]]
        # one instance, window 10 (worker_threads), 200 ms each: never more than 10 at once, so at
        # least 2 s; and several at once, so well under the 20 s of one at a time
        assert worker.most_at_once() == 10
        assert 1.9 < out["total_s"] < 20, out["total_s"]
        assert sorted(worker.deliveries()) == sorted(sent)
        stats = env.stats()
        assert stats["input"]["length"] == 0 and stats["sink"]["length"] == 0
        assert stats["counters"]["completed"] == N and stats["counters"]["duplicates"] == 0
    finally:
        env.close()


def test_sdk_queue_api(tmp_path: Path, eas_python: Path, backend_kind: str, redis_url_for: str) -> None:
    env = make_env(tmp_path, "asyncapi", redis_url=redis_url_for)
    try:
        env.start_server()
        out = run_sdk(eas_python, env.endpoint, "asyncapi", TOKEN, "api")
        index, rid = out["put"]
        assert out["by_request_id"] == [
            {"index": int(index), "data": "abc", "tags": {"color": "red", "requestId": rid}}
        ]
        assert out["by_index"] == [{"index": int(index), "data": "abc"}]
        assert out["search"]["requestId"] == rid and out["search"]["state"] == "ready"
        assert out["attrs"]["stream.length"] == "1" and out["attrs"]["stream.lastEntry"] == index
        assert out["after_delete"] == 0
        assert out["after_truncate"] == "0"
        assert [w["data"] for w in out["watch_index_only"]] == ["", ""]
        assert out["after_commit"] == "0"
        assert out["empty_get"] == 0 and 0.9 < out["empty_get_s"] < 10  # waited its 1 s timeout
        assert out["bad_path"] == 404
    finally:
        env.close()
