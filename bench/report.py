"""Turn results.json into the console table, docs/benchmarks.md and docs/benchmarks.png."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CASES = ("GET", "POST 6KB", "POST 900KB")
PATHS = ("direct", "nginx", "gateway")
NOTES_BEGIN = "<!-- notes:begin (kept across runs) -->"
NOTES_END = "<!-- notes:end -->"
# the LLM section, written by bench/llm.py, is kept as it is when this page is regenerated
LLM_BEGIN, LLM_END = "<!-- llm-section:begin -->", "<!-- llm-section:end -->"
TARGET_THROUGHPUT = 0.5
TARGET_P50_US = 60.0
TARGET_P99_US = 300.0
TARGET_KIB_PER_STREAM = 16.0
TARGET_ROUTING = 0.95


def _cell(results: dict[str, Any], path: str, case: str, conns: int) -> dict[str, Any] | None:
    cell: dict[str, Any] | None = results.get("summary", {}).get(f"{path}|{case}|{conns}")
    return cell


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else math.nan


def _f(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def ratio_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for case in CASES:
        for conns in (1, 64):
            d, n, g = (_cell(results, p, case, conns) for p in PATHS)
            if not (d and n and g):
                continue
            rows.append(
                [
                    case,
                    str(conns),
                    _f(d["rps"]),
                    _f(n["rps"]),
                    _f(g["rps"]),
                    _f(_ratio(g["rps"], n["rps"]), 2),
                    _f(_ratio(g["rps"], d["rps"]), 2),
                    f"{_f(n['p50_us'] - d['p50_us'])} / {_f(n['p99_us'] - d['p99_us'])}",
                    f"{_f(g['p50_us'] - d['p50_us'])} / {_f(g['p99_us'] - d['p99_us'])}",
                    f"{_f(n['proxy_cpu_us_per_req'])} / {_f(g['proxy_cpu_us_per_req'])}",
                    str(d["errors"] + n["errors"] + g["errors"]),
                ]
            )
    return rows


RATIO_HEAD = (
    "case",
    "conns",
    "direct req/s",
    "nginx req/s",
    "gateway req/s",
    "gw/nginx",
    "gw/direct",
    "nginx added p50/p99 µs",
    "gateway added p50/p99 µs",
    "proxy CPU µs/req nginx/gw",
    "errors",
)


def text_table(head: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def md_table(head: Sequence[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def targets(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**not met**")

    n, g = _cell(results, "nginx", "GET", 64), _cell(results, "gateway", "GET", 64)
    r = _ratio(g["rps"], n["rps"]) if n and g else math.nan
    others = ", ".join(
        f"{case}: {_f(_ratio(gc['rps'], nc['rps']), 2)}x"
        for case in CASES[1:]
        if (nc := _cell(results, "nginx", case, 64)) and (gc := _cell(results, "gateway", case, 64))
    )
    rows.append(
        [
            f"throughput at 64 conns, gateway >= {TARGET_THROUGHPUT}x nginx (1 worker each)",
            f"GET: {_f(r, 2)}x ({others})",
            verdict(None if math.isnan(r) else r >= TARGET_THROUGHPUT),
        ]
    )
    d1, g1 = _cell(results, "direct", "GET", 1), _cell(results, "gateway", "GET", 1)
    if d1 and g1:
        a50, a99 = g1["p50_us"] - d1["p50_us"], g1["p99_us"] - d1["p99_us"]
        rows.append(
            [
                f"added latency at 1 conn, p50 <= {TARGET_P50_US:.0f} µs",
                f"GET: +{_f(a50)} µs",
                verdict(a50 <= TARGET_P50_US),
            ]
        )
        rows.append(
            [
                f"added latency at 1 conn, p99 <= {TARGET_P99_US:.0f} µs",
                f"GET: +{_f(a99)} µs",
                verdict(a99 <= TARGET_P99_US),
            ]
        )
    sse = results.get("sse")
    if sse:
        h = sse["hold"]
        ok_streams = h["with_two_events"]
        kib = h["kib_per_stream"]
        at_10k = h["requested"] >= 10_000
        fds = h.get("gateway_fds_with", 0)
        why = ""
        if at_10k and ok_streams < 10_000:
            why = (
                f"; the gateway had {_f(fds)} files open against a limit of {sse.get('gateway_nofile', '?')} "
                "(2 per stream): the machine's descriptor limit, see Notes"
            )
        rows.append(
            [
                "10,000 SSE streams held through one gateway process",
                f"{ok_streams:,} of {h['requested']:,} streams received events{why}",
                verdict(ok_streams >= 10_000)
                if at_10k
                else f"not verified (the run held {h['requested']:,})",
            ]
        )
        rows.append(
            [
                f"SSE memory <= {TARGET_KIB_PER_STREAM:.0f} KiB per stream",
                f"{_f(kib, 1)} KiB per stream (gateway RSS growth / {ok_streams:,} streams)",
                verdict(kib <= TARGET_KIB_PER_STREAM),
            ]
        )
    rt = results.get("routing")
    if rt:
        alone, system = rt.get("alone") or {}, rt.get("system") or {}
        ratio = alone.get("ratio", math.nan)
        rows.append(
            [
                f"+{rt['extra_routes']:,} services in the routing table: within 5% of the bench's own 2",
                f"gateway alone: {_f(ratio, 3)}x; under the server (control plane on the same cores): "
                f"{_f(system.get('ratio', math.nan), 3)}x",
                verdict(None if math.isnan(ratio) else ratio >= TARGET_ROUTING),
            ]
        )
    checks = results.get("checks", [])
    guard = [c for c in checks if "401" in c["check"] or "413" in c["check"]]
    gw_errors = sum(c["errors"] for c in results.get("summary", {}).values() if c["path"] == "gateway")
    ok_guard = bool(guard) and all(c["ok"] for c in guard) and gw_errors == 0
    rows.append(
        [
            "auth and the 1 MiB body limit ON in every figure",
            f"401/413 checks {'pass' if ok_guard else 'FAIL'}; gateway non-2xx/errors in cells: {gw_errors}",
            verdict(ok_guard),
        ]
    )
    return rows


def full_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for case in CASES:
        for conns in (1, 64):
            for path in PATHS:
                c = _cell(results, path, case, conns)
                if c:
                    rows.append(
                        [
                            path,
                            case,
                            str(conns),
                            _f(c["rps"]),
                            f"{_f(c['rps_min'])} to {_f(c['rps_max'])}",
                            _f(c["p50_us"]),
                            _f(c["p99_us"]),
                            _f(c["proxy_cpu_us_per_req"]) if path != "direct" else "-",
                            str(c["errors"]),
                            f"{c['runs']}/{c.get('runs_measured', c['runs'])}",
                            _f(c.get("foreign_cpu_pct_max"), 0),
                        ]
                    )
    return rows


FULL_HEAD = (
    "path",
    "case",
    "conns",
    "req/s (median)",
    "req/s range",
    "p50 µs",
    "p99 µs",
    "proxy CPU µs/req",
    "errors",
    "runs used/measured",
    "other CPU % (max)",
)


def render(results: dict[str, Any], md_path: Path | None, png_path: Path | None) -> str:
    ratio = text_table(RATIO_HEAD, ratio_rows(results))
    tgt = text_table(["target", "measured", "verdict"], targets(results))
    console = f"{ratio}\n\n{tgt}"
    if md_path is not None:
        old = md_path.read_text() if md_path.exists() else ""
        md_path.write_text(markdown(results, _kept_notes(old)) + _kept_llm(old))
    if png_path is not None:
        plot(results, png_path)
    return console


def _kept_llm(old: str) -> str:
    if LLM_BEGIN in old and LLM_END in old:
        return "\n" + LLM_BEGIN + old.split(LLM_BEGIN, 1)[1].split(LLM_END, 1)[0] + LLM_END + "\n"
    return ""


def _kept_notes(old: str) -> str:
    if NOTES_BEGIN in old and NOTES_END in old:
        return old.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    return "_(no notes yet)_"


def _cpu_md(results: dict[str, Any]) -> str:
    rows = []
    for case in CASES:
        for conns in (64, 1):
            n, g = _cell(results, "nginx", case, conns), _cell(results, "gateway", case, conns)
            if not (n and g) or "proxy_user_us_per_req" not in g:
                continue
            rows.append(
                [
                    case,
                    str(conns),
                    _f(n["proxy_user_us_per_req"], 1),
                    _f(n["proxy_sys_us_per_req"], 1),
                    _f(g["proxy_user_us_per_req"], 1),
                    _f(g["proxy_sys_us_per_req"], 1),
                    _f(g["proxy_user_us_per_req"] - n["proxy_user_us_per_req"], 1),
                ]
            )
    head = [
        "case",
        "conns",
        "nginx user",
        "nginx kernel",
        "gateway user",
        "gateway kernel",
        "gateway - nginx, user",
    ]
    return "\n".join(
        [
            "CPU per request of the proxy process, µs, split into user space and kernel (utime/stime from "
            "/proc; medians over rounds). Kernel time is mostly the loopback TCP send/receive path, which "
            "both proxies pay for the same four socket operations per request; user time is where the "
            "gateway's Python (and httptools, uvloop) costs more than nginx.",
            "",
            md_table(head, rows),
        ]
    )


def _access_log_md(a: dict[str, Any] | None) -> str:
    if not a:
        return ""
    if "error" in a:
        return f"Access-log comparison failed: {a['error']}"
    rows = [
        [k, _f(v["rps"]), _f(v["cpu_us_per_req"], 1), _f(v["user_us_per_req"], 1), str(v["errors"])]
        for k, v in a.items()
        if isinstance(v, dict)
    ]
    return "\n".join(
        [
            "The server runs its gateway with `--access-log` (one JSON line per request). Two gateways "
            "started by the bench from a private registry, one with and one without it (GET, 64 "
            f"connections): with / without = **{_f(a.get('rps_ratio_on_off'), 2)}**.",
            "",
            md_table(["gateway", "req/s", "CPU µs/req", "user µs/req", "errors"], rows),
        ]
    )


def _profile_md(p: dict[str, Any]) -> str:
    if not p or not p.get("ok"):
        return f"Profile not taken: {p.get('message', 'not run') if p else 'not run'}"
    skip = (
        "<module>",
        "_run_code",
        "_run_module_as_main",
        "main (openeas/gateway/__main__.py)",
        "run (uvloop",
    )
    lines = [
        f"py-spy (Python frames), {p['seconds']} s at 250 Hz on the gateway process (pid {p['pid']}) under "
        f"wrk GET at 64 connections, in a separate run: {p['samples']:,} busy samples (py-spy leaves out "
        "idle samples). Time spent in C (uvloop's socket writes and reads, i.e. the system calls, and "
        "the httptools parser) is charged to the Python line that called into it; the event loop's own C "
        "work (epoll, dispatch) shows as `Runner.run`. Flame graph: `bench/out/profile.svg`; collapsed "
        "stacks: `bench/out/profile.txt`.",
        "",
        "Self time by function:",
        "",
        md_table(
            ["function (file)", "% of busy samples"],
            [[f"`{r['frame']}`", _f(r["pct_of_busy"], 1)] for r in p["top_self"][:12]],
        ),
        "",
        "Self time by line (top 10):",
        "",
        md_table(
            ["line", "% of busy samples"],
            [[f"`{r['frame']}`", _f(r["pct_of_busy"], 1)] for r in p.get("top_self_lines", [])[:10]],
        ),
        "",
        "Inclusive time (the function and what it calls):",
        "",
        md_table(
            ["function (file)", "% of busy samples"],
            [
                [f"`{r['frame']}`", _f(r["pct_of_busy"], 1)]
                for r in p["top_inclusive"]
                if not r["frame"].startswith(skip)
            ][:12],
        ),
    ]
    return "\n".join(lines)


def _routing_md(rt: dict[str, Any] | None) -> str:
    if not rt:
        return "Not run."
    n = rt["extra_routes"]
    parts = [
        f"{n:,} service rows (each with its own token; `metadata.instance` 0, status Running, so there is "
        "nothing to start) are written straight into the registry in one transaction; the probe for "
        '"the snapshot has them" is an added service that stops answering 404. The bench\'s own service '
        "is measured (GET, 64 connections) before, with the extra rows, and after they are deleted. "
        "Twice: **system** = the shared gateway under `openeas server`, whose control plane reconciles "
        "the extra services on the same two cores; **gateway alone** = a gateway the bench starts "
        "from a private registry that no control plane reads: the gateway's routing table on its own.",
        "",
    ]
    head = [
        "gateway",
        "routing table",
        "req/s (median)",
        "runs",
        "p99 µs",
        "gateway CPU µs/req",
        "errors",
        "gateway RSS KiB",
        "control-plane CPU s",
        "other CPU % (max)",
    ]
    rows = []
    for key, label in (("system", "system"), ("alone", "gateway alone")):
        x = rt.get(key)
        if not x:
            continue
        if "error" in x:
            rows.append([label, x["error"], *["-"] * 8])
            continue
        for phase, what in (
            ("before", "bench's 2 services"),
            ("with_extra", f"+{n:,} services"),
            ("after", "2 again (rows deleted)"),
        ):
            v = x[phase]
            rows.append(
                [
                    label,
                    what,
                    _f(v["rps"]),
                    ", ".join(_f(r) for r in v["rps_all"]),
                    _f(v["p99_us"]),
                    _f(v.get("gateway_cpu_us_per_req"), 1),
                    str(v["errors"]),
                    _f(v["gateway_rss_kib"]),
                    _f(v["control_cpu_s"], 1) if key == "system" else "-",
                    _f(v.get("foreign_cpu_pct_max")),
                ]
            )
    parts.append(md_table(head, rows))
    parts.append("")
    for key, label in (("system", "System"), ("alone", "Gateway alone")):
        x = rt.get(key)
        if x and "error" not in x:
            parts.append(
                f"- {label}: ratio +{n:,} / small table (median of before+after runs) "
                f"**{_f(x['ratio'], 3)}** "
                f"(vs before only {_f(x['ratio_vs_before'], 3)}); rows visible to the gateway "
                f"{_f(x['snapshot_visible_after_s'], 2)} s after the insert ({_f(x['insert_s'], 2)} s)."
            )
    return "\n".join(parts)


def _workers_md(w: dict[str, Any] | None) -> str:
    if not w:
        return "Not run."
    if not w.get("available"):
        return f"Not available: {w.get('reason')}."
    rows = []
    for k, v in w["results"].items():
        if "error" in v:
            rows.append([k, "-", "-", "-", "-", v["error"]])
        else:
            rows.append(
                [
                    k,
                    _f(v["nginx_rps"]),
                    _f(v["gateway_rps"]),
                    _f(v["ratio"], 2),
                    f"{_f(v['nginx_cpu_us_per_req'])} / {_f(v['gateway_cpu_us_per_req'])}",
                    str(v["errors"]),
                ]
            )
    head = ["workers", "nginx req/s", "gateway req/s", "gw/nginx", "proxy CPU µs/req nginx/gw", "errors"]
    return "\n".join(
        [
            "GET at 64 connections. nginx with `worker_processes N` (reuseport); the gateway started by the "
            "bench as `python -m openeas.gateway --workers N` from a private registry holding the same "
            "route and instance (so the server's control plane does not manage it).",
            "",
            md_table(head, rows),
        ]
    )


def _sse_md(s: dict[str, Any] | None) -> str:
    if not s:
        return "Not run."
    h = s["hold"]
    return "\n".join(
        [
            md_table(
                ["measure", "value"],
                [
                    [
                        "streams requested / connected / HTTP 200",
                        f"{h['requested']} / {h['connected']} / {h['status_200']}",
                    ],
                    [
                        "streams with >= 1 event / >= 2 events (one per second)",
                        f"{h['with_first_event']} / {h['with_two_events']}",
                    ],
                    ["connect failures (retried up to 3 times)", str(h["connect_failures"])],
                    ["time to open all streams and see first events", f"{_f(h['open_seconds'], 1)} s"],
                    [
                        "gateway RSS before / with streams / 2 s later / after close (KiB)",
                        f"{_f(h['rss_before_kib'])} / {_f(h['rss_with_kib'])} / "
                        f"{_f(h['rss_with_later_kib'])} / {_f(h['rss_after_close_kib'])}",
                    ],
                    ["**gateway memory per stream**", f"**{_f(h['kib_per_stream'], 1)} KiB**"],
                    [
                        f"time to first event, median of {s['ttfe_samples']} fresh streams: direct / gateway",
                        f"{_f(s['ttfe_direct_us'])} / {_f(s['ttfe_gateway_us'])} µs",
                    ],
                    ["**delay the gateway adds to the first event**", f"**{_f(s['ttfe_added_us'])} µs**"],
                    [
                        "gateway open files with the streams / its limit (soft hard)",
                        f"{_f(h.get('gateway_fds_with'))} / {s.get('gateway_nofile')}",
                    ],
                    [
                        "statuses of the stream requests",
                        ", ".join(f"{k}: {v}" for k, v in h.get("statuses", {}).items()),
                    ],
                ],
            ),
        ]
    )


def _noise(results: dict[str, Any]) -> str:
    cells = results.get("cells", [])
    q = results.get("quiet_before", {})
    if not cells:
        return ""
    worst = max(c.get("foreign_cpu_pct", 0.0) for c in cells)
    busy = sum(1 for c in cells if c.get("foreign_cpu_pct", 0.0) > 10.0)
    return (
        f"Before the run the machine was {_f(q.get('idle_pct'), 0)}% idle (load {q.get('loadavg', '?')}). "
        '"Other CPU %" is CPU used during a cell by processes that are not the bench\'s (machine busy time '
        "from /proc/stat minus the bench's processes and wrk), in % of one core: "
        f"at most {_f(worst, 0)}%, above 10% in {busy} of {len(cells)} cells."
    )


def markdown(results: dict[str, Any], notes: str) -> str:
    m = results.get("machine", {})
    args = results.get("args", {})
    setup = results.get("setup", {})
    checks = results.get("checks", [])
    check_rows = [[c["check"], "ok" if c["ok"] else "**FAIL**", c["detail"]] for c in checks]
    return f"""# Benchmarks: the gateway's data plane against nginx

Generated by the bench (`python3 -m bench`, or `bash bench/run.sh`, from the repository root; options:
`python3 -m bench --help`). This page: `{results.get("command", "python3 -m bench")}`, run on
{results.get("started", "?")}; it took {_f(results.get("elapsed_s"), 0)} s. Every number below
comes from that one run on the machine described at the end; raw numbers are in `bench/out/results.json`
(not committed). Re-run it to refresh this page (the "Notes" section is kept).

![req/s and latency by path and case](benchmarks.png)

## Targets

{md_table(["target", "measured", "verdict"], targets(results))}

## Ratios

Gateway and nginx against the same upstream; "added" latency is the path's percentile minus the
direct call's (wrk, closed loop, medians of {args.get("rounds", "?")} rounds). "Proxy CPU µs/req" is the
CPU time (user+system, from /proc) the proxy process(es) used during the cell divided by the requests
served: on two shared cores it is the steadiest measure of cost per request.

{md_table(RATIO_HEAD, ratio_rows(results))}

All cells:

{md_table(FULL_HEAD, full_rows(results))}

## Routing table size

{_routing_md(results.get("routing"))}

## Worker scaling

{_workers_md(results.get("workers"))}

## SSE streams

{_sse_md(results.get("sse"))}

## Where the gateway's time goes (profile)

{_cpu_md(results)}

{_access_log_md(results.get("access_log"))}

{_profile_md(results.get("profile", {}))}

## Notes

{NOTES_BEGIN}
{notes}
{NOTES_END}

## Method

- **One run, one machine.** `python3 -m bench` starts `openeas server` in a temp data dir on free
  loopback ports and deploys two services with `openeas create SPEC --wait --json`: `bench_nginx`, whose
  container command renders an nginx config on `$PORT` and runs `nginx -g "daemon off;"`
  (`worker_processes 1`, keep-alive, `access_log off`), and `bench_sse` (`bench/sse_upstream.py`). The
  upstream's port is read from `GET /api/v2/services/local/bench_nginx/instances`.
- **Upstream** answers every request with the same {setup.get("response_bytes", "?")}-byte
  static JSON document. `POST /post` reads the **whole** request body before answering (nginx `mirror`
  with `mirror_request_body on` reads it, then the static handler's 405 is turned into the 200 answer
  by `error_page`); a plain `return 200` would answer after the headers and discard the body later,
  unlike a model server. `client_max_body_size 2m`, `client_body_buffer_size 2m` (bodies in memory).
- **Paths.** `direct`: wrk -> upstream. `nginx`: wrk -> nginx 1-worker reverse proxy
  (`upstream {{ keepalive 64; }}`, `proxy_http_version 1.1`, `proxy_set_header Connection ""`,
  **`proxy_request_buffering off`** so request bodies stream like the gateway's, response buffering on
  (default), `client_max_body_size 1m` = the gateway's limit, same `/api/predict/<service>/` prefix,
  stripped) -> upstream. `gateway`: wrk -> the shared gateway the server started (token auth on, 1 MiB
  body limit on) -> upstream. Every request carries the same `Authorization: <token>` header on every
  path, so request sizes are equal; only the gateway checks it.
- **Service settings.** The shared gateway applies EAS's default of 1,000 QPS per service and admits
  `metadata.rpc.worker_threads` (default 5) requests per instance at a time; either would cap the
  figures. The bench's specs set `networking.gateway_policy.rate_limit` to `{{"enable": true, "limit":
  100000000}}` and `worker_threads` to 1024 (the limiter and the admission accounting stay on the request
  path), and give the SSE service one instance per 1,000 streams (a held stream holds a worker slot).
- **Load.** wrk 4.1 with `bench/lua/report.lua` (method, body, header; `done()` prints percentiles
  in µs as JSON). 1 connection: `-t1 -c1`; 64 connections: `-t2 -c64`; {args.get("duration", "?")} s per
  cell; every cell {args.get("rounds", "?")} times, path order alternating between rounds. A cell
  during which other processes used more than {args.get("noisy_pct", "15")} % of a core is re-run (after
  waiting, within a budget, for the machine to calm down) and the quietest attempt kept; medians are
  taken over the rounds that stayed under that line (all rounds when none did; "runs used/measured").
  Bodies: JSON documents of exactly 6,144 and 921,600 bytes. A
  2 s warm-up per path first.
- **Checks before measuring**: every path answers GET and both POSTs with the upstream's JSON and
  keeps the connection usable afterwards; the gateway answers 401 without / with a wrong token and
  413 for a 1,048,577-byte body (nginx too):

{md_table(["check", "result", "detail"], check_rows)}

- **SSE**: `bench/sse_client.py` (raw asyncio sockets) opens {args.get("sse_streams", "?")} streams
  through the gateway (at most 200 connects in flight), waits until each stream has received two events (the
  upstream sends one at once and then one per second to every stream), reads the gateway's VmRSS from
  `/proc/<pid>/status` before and with the streams open: KiB per stream = difference / streams. Time
  to first event: fresh connection -> first complete event, direct vs through the gateway, in
  alternating batches of 10, medians. The bench raises its RLIMIT_NOFILE to the hard limit
  (children inherit it); the gateway needs two descriptors per stream, so for 10,000 streams the
  server needs `ulimit -n` above ~20,100 (`bash bench/run.sh` raises the soft limit to the hard one;
  this machine's soft and hard limits: {results.get("bench_nofile", "?")}).
- **Profile**: `py-spy record --nonblocking -r 250 --format raw` (and a flame graph) on the gateway
  process during a separate GET/64-connection wrk run (not part of the figures above: sampling costs CPU).
- **Noise.** wrk, the proxy under test and the upstream share {m.get("nproc", "?")} cores, so every
  figure includes contention between them (nginx's upstream and proxy each need a core at 64
  connections). Ratios measured back to back are more trustworthy than absolute req/s; run-to-run
  spread is in the full table. {_noise(results)}

## Machine

| | |
|---|---|
| CPUs (`nproc`) | {m.get("nproc")} |
| CPU model | {m.get("cpu_model")} |
| memory | {m.get("mem_gib")} GiB |
| kernel | {m.get("kernel")} |
| Python | {m.get("python")} (uvloop {m.get("uvloop", "?")}, httptools {m.get("httptools", "?")}) |
| nginx | {m.get("nginx")} |
| wrk | {m.get("wrk")} |
| py-spy | {m.get("py_spy")} |
| openeas commit | {m.get("openeas_commit")} |
| gateway process | `{setup.get("gateway_cmdline", "?")}` |
"""


def plot(results: dict[str, Any], png_path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    colors = {"direct": "#7f8c8d", "nginx": "#27ae60", "gateway": "#2980b9"}
    fig, grid = plt.subplots(2, 2, figsize=(14, 9))
    axes = list(grid.flat)
    width = 0.26
    panels = (
        (axes[0], 64, "rps", "Throughput, 64 connections", "req/s", PATHS),
        (axes[1], 64, "proxy_cpu_us_per_req", "Proxy CPU per request, 64 connections", "µs", PATHS[1:]),
        (axes[2], 1, "p50_us", "Latency p50, 1 connection", "µs", PATHS),
        (axes[3], 1, "p99_us", "Latency p99, 1 connection", "µs", PATHS),
    )
    for ax, conns, metric, title, ylabel, paths in panels:
        for i, path in enumerate(paths):
            vals = [(_cell(results, path, c, conns) or {}).get(metric, 0.0) for c in CASES]
            offset = (i - (len(paths) - 1) / 2) * width
            xs = [j + offset for j in range(len(CASES))]
            bars = ax.bar(xs, vals, width, label=path, color=colors[path])
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize=7, padding=2)
        ax.set_xticks(range(len(CASES)), list(CASES))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    m = results.get("machine", {})
    fig.suptitle(
        f"openeas gateway vs nginx vs direct — {m.get('nproc', '?')} cores {m.get('cpu_model', '')}, "
        f"{results.get('started', '')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
