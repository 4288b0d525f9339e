"""Framing strictness (issue 17, item 1): every rule of framing.RULES, against the gateway and nginx.

One test sends the corpus (framing_corpus.py, one raw request per rule) to an in-process gateway and
to nginx from Debian, both proxying to the same recording instance, and checks:
- the gateway answers exactly what the rule says (a status then close, or the instance's 200);
- nothing of a refused request reached the instance, and accepted ones arrived normalized
  (chunk extensions and trailers gone, absolute-form turned into origin-form with its Host);
- nginx answers what the rule's `nginx` column says (the differences are explained there and in
  docs/gateway.md).
A second test checks that the docs table mirrors the code table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from openeas.gateway.framing import BY_NAME, RULES
from openeas.gateway.snapshot import RoutingSnapshot
from tests.gateway.framing_corpus import CASES, NGINX_OTHERWISE, RESPONSES, TOKEN, rule_of
from tests.gateway.inprocess import route, running_gateway
from tests.gateway.nginx_reference import running_nginx
from tests.gateway.raw_client import Exchange, exchange
from tests.gateway.recording_upstream import RecordingUpstream, start_recording_upstream

ROOT = Path(__file__).resolve().parents[2]


def _status(ex: Exchange) -> int:
    return ex.answers[0].status if ex.answers else 0


def _reached(up: RecordingUpstream, name: str, paths: list[bytes]) -> int:
    return sum(1 for p in paths if p.split(b"?")[0].endswith(b"/" + name.encode()))


def test_every_rule_has_a_case() -> None:
    assert {rule_of(c) for c in CASES} == set(BY_NAME), {rule_of(c) for c in CASES} ^ set(BY_NAME)


def test_corpus_against_gateway_and_nginx(tmp_path: Path) -> None:
    up = start_recording_upstream()
    snapshot = RoutingSnapshot(1, {"svc": route("svc", TOKEN, [up.port])})
    gateway: dict[str, Exchange] = {}
    nginx: dict[str, Exchange] = {}
    try:
        with running_gateway(snapshot) as gw:
            for name, raw in CASES.items():
                gateway[name] = exchange(gw.port(), raw, RESPONSES.get(name, 1))
        gateway_paths = up.paths()
        gateway_requests = list(up.requests)
        gateway_raw = b"".join(up.raw)
        with running_nginx(tmp_path / "nginx", up.port) as port:
            for name, raw in CASES.items():
                nginx[name] = exchange(port, raw, RESPONSES.get(name, 1))
    finally:
        up.close()

    wrong: list[str] = []
    for name in CASES:
        rule = BY_NAME[rule_of(name)]
        g = gateway[name]
        want = rule.status or 200
        if _status(g) != want:
            wrong.append(f"{name}: gateway answered {_status(g)}, the rule says {want}: {g.raw[:200]!r}")
            continue
        reached = _reached(up, name, gateway_paths)
        if rule.status:
            if reached:
                wrong.append(f"{name}: refused, but the instance received it")
            if not g.closed:
                wrong.append(f"{name}: refused, but the connection was kept")
            named = json.loads(g.answers[0].body)["code"] == want and rule.name.encode() in g.answers[0].body
            if not named and want not in (408, 414, 431):
                wrong.append(f"{name}: the JSON error does not name the rule: {g.answers[0].body!r}")
        else:
            expected = RESPONSES.get(name, 1)
            if reached != expected or len(g.answers) != expected:
                wrong.append(
                    f"{name}: accepted, the instance got {reached}, the client {len(g.answers)} answers"
                )
        n = nginx[name]
        nginx_want = NGINX_OTHERWISE.get(name, rule.nginx or 200)
        if _status(n) != nginx_want:
            wrong.append(f"{name}: nginx answered {_status(n)} ({n.raw[:60]!r}), the table says {nginx_want}")
    # accepted ones arrived normalized
    by_path = {r.url: r for r in gateway_requests}
    ext = by_path.get(b"/chunk-ext")
    if ext is None or ext.body != b"abc" or b"ext=value" in gateway_raw:
        wrong.append("chunk-ext: the extension reached the instance (or the body did not)")
    if b"smuggled" in gateway_raw:
        wrong.append("trailers: the trailer reached the instance")
    absolute = by_path.get(b"/absolute-form")
    if absolute is None or [v for n, v in absolute.headers if n.lower() == b"host"] != [b"gw.example"]:
        wrong.append(f"absolute-form: not normalized: {absolute}")
    ka = gateway["http10-keep-alive"]
    if ka.closed or ka.answers[0].headers.get(b"connection") != b"keep-alive":
        wrong.append("http10-keep-alive: the connection was not kept alive")
    assert not wrong, "\n".join(wrong)


def test_docs_table_mirrors_the_rules() -> None:
    text = (ROOT / "docs" / "gateway.md").read_text()
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(
            r"^\| `([a-z0-9-]+)` \|[^|]*\| (\d{3}|accepted) \|[^|]*\|[^|]*\| (\d{3}|proxied) \|", text, re.M
        )
    }
    for rule in RULES:
        assert rule.name in rows, f"docs/gateway.md has no Framing row for {rule.name}"
        status, nginx = rows[rule.name]
        assert status == (str(rule.status) if rule.status else "accepted"), rule.name
        assert nginx == (str(rule.nginx) if rule.nginx else "proxied"), rule.name
