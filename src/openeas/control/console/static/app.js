// The openeas web console: a hash-routed single page over the /api/v2 JSON API.
//   #/login  #/services  #/services/<name>[/overview|monitoring|queue|instances|logs|debug|spec]  #/deploy  #/gateways

import { ApiError, gateways, login, services, session } from "./api.js";
import { badge, clear, confirmDialog, copyButton, fmtAgo, fmtBytes, fmtTime, h, infoGrid, modal, tabBar, toast } from "./dom.js";
import { examplesFor, isAsync, prettyJson, profileOf } from "./examples.js";
import { fmtNum, lineChart } from "./charts.js";

const SERVICE_TABS = [
  { id: "overview", label: "Overview" },
  { id: "monitoring", label: "Monitoring" },
  { id: "queue", label: "Queue", async: true },
  { id: "instances", label: "Instances" },
  { id: "logs", label: "Logs" },
  { id: "debug", label: "Online debug" },
  { id: "spec", label: "Spec" },
];

// -- page lifecycle ------------------------------------------------------------------------

/** What a page owns while it is shown: its pollers. Stopped when the page is left. */
class Page {
  constructor() {
    this.alive = true;
    this.timers = new Set();
  }
  /** Run fn every `ms` (after the previous run ends), skipped while the tab is hidden. */
  every(ms, fn) {
    const tick = async () => {
      if (!this.alive) return;
      if (!document.hidden) {
        try {
          await fn();
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 401)) console.warn("refresh failed:", err);
        }
      }
      if (this.alive) this.timers.add(setTimeout(tick, ms));
    };
    this.timers.add(setTimeout(tick, ms));
  }
  stop() {
    this.alive = false;
    for (const t of this.timers) clearTimeout(t);
  }
}

let current = null;
let loginMessage = "";

const ROUTES = [
  [/^#\/login$/, pageLogin, false],
  [/^#\/services\/?$/, pageServices, true],
  [/^#\/deploy$/, pageDeploy, true],
  [/^#\/gateways$/, pageGateways, true],
  [/^#\/services\/([^/]+)(?:\/([a-z]+))?$/, pageService, true],
];

async function render() {
  if (current) current.stop();
  current = null;
  for (const d of document.querySelectorAll("dialog[open]")) d.close(); // dialogs belong to the page left
  const hash = location.hash || "#/services";
  for (const [re, show, needsLogin] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    if (needsLogin && !session.token()) {
      location.replace("#/login");
      return;
    }
    const page = new Page();
    current = page;
    updateChrome(hash);
    const root = clear(document.getElementById("main"));
    root.dataset.page = show.name;
    try {
      await show(root, page, ...m.slice(1).map((p) => (p === undefined ? undefined : decodeURIComponent(p))));
    } catch (err) {
      if (page.alive) root.append(errorBox(err));
    }
    return;
  }
  location.replace("#/services");
}

function updateChrome(hash) {
  const loggedIn = Boolean(session.token()) && hash !== "#/login";
  document.body.classList.toggle("logged-out", !loggedIn);
  document.getElementById("region").textContent = loggedIn ? `region ${session.region()}` : "";
  for (const a of document.querySelectorAll(".topnav a")) {
    const target = a.getAttribute("href");
    const active = target === "#/services" ? hash.startsWith("#/services") : hash.startsWith(target);
    a.classList.toggle("active", active);
  }
}

function errorBox(err) {
  const message = err instanceof ApiError ? err.message : `Unexpected error: ${err && err.message ? err.message : err}`;
  const box = h("div", { class: "alert alert-bad", role: "alert" }, h("strong", {}, err && err.code ? `${err.code}: ` : "Error: "), message);
  const problems = err instanceof ApiError && Array.isArray(err.body.problems) ? err.body.problems : [];
  if (problems.length) {
    box.append(
      h("table", { class: "table table-compact problems" },
        h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Problem"))),
        h("tbody", {}, problems.map((p) => h("tr", {}, h("td", {}, h("code", {}, p.field)), h("td", {}, p.problem)))),
      ),
    );
  }
  return box;
}

function pageHeader(title, ...actions) {
  return h("div", { class: "page-head" }, h("h1", {}, title), h("div", { class: "page-actions" }, actions));
}

// -- login ---------------------------------------------------------------------------------

async function pageLogin(root) {
  const input = h("input", { type: "password", id: "admin-token", name: "admin-token", autocomplete: "off", spellcheck: "false", placeholder: "admin token", required: true });
  const error = h("div", { class: "form-error", role: "alert" }, loginMessage);
  loginMessage = "";
  const button = h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Log in");
  const form = h("form", { class: "login-form", id: "login-form" },
    h("label", { for: "admin-token" }, "Admin token"), input, error, button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      await login(input.value.trim());
      location.hash = "#/services";
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "That is not this server's admin token."
        : err.message;
    } finally {
      button.disabled = false;
    }
  });
  root.append(
    h("div", { class: "login-wrap" },
      h("div", { class: "card login-card" },
        h("div", { class: "login-brand" }, h("span", { class: "logo" }, "EAS"), h("span", {}, "openeas console")),
        h("h1", {}, "Log in"),
        h("p", { class: "muted" }, "Use the admin token of this server. It is in the file ",
          h("code", {}, "admin_token"), " of the server's data dir:"),
        h("pre", { class: "code code-inline" }, "cat ~/.openeas/admin_token"),
        form,
        h("p", { class: "muted small" }, "The token stays in this browser tab only (session storage) and is sent only in the Authorization header."),
      ),
    ),
  );
  session.clear();
  input.focus();
}

// -- services list -------------------------------------------------------------------------

async function pageServices(root, page) {
  const stats = h("div", { class: "stats" });
  const tbody = h("tbody", { id: "services-body" });
  const empty = h("div", { class: "empty", hidden: true },
    h("p", {}, "No services yet."), h("a", { class: "btn btn-primary", href: "#/deploy" }, "Deploy a service"));
  root.append(
    pageHeader("Inference services", h("a", { class: "btn btn-primary", href: "#/deploy", id: "deploy-link" }, "Deploy service")),
    stats,
    h("div", { class: "card card-flush" },
      h("div", { class: "table-wrap" },
        h("table", { class: "table", id: "services-table" },
          h("thead", {}, h("tr", {},
            ["Service", "Status", "Instances", "Type", "Gateway", "Internet endpoint", "Updated", ""].map((t) => h("th", {}, t)))),
          tbody)),
      empty),
  );

  let shown = "";
  const refresh = async () => {
    const data = await services.list();
    if (!page.alive) return;
    const list = data.services.slice().sort((a, b) => a.name.localeCompare(b.name));
    // Redraw only what changed: a row being clicked is not replaced under the pointer.
    const key = JSON.stringify(list.map((s) => [s.name, s.status, s.message, s.running_instances, s.instance,
      s.desired_state, s.endpoints, s.gateway, fmtAgo(s.updated_at)]));
    if (key === shown) return;
    shown = key;
    const running = list.filter((s) => s.status === "Running").length;
    const inst = list.reduce((n, s) => n + s.running_instances, 0);
    const want = list.reduce((n, s) => n + (s.desired_state === "running" ? s.instance : 0), 0);
    clear(stats).append(
      stat("Services", list.length), stat("Running", running), stat("Instances ready", `${inst} / ${want}`),
    );
    empty.hidden = list.length > 0;
    clear(tbody).append(...list.map((s) => serviceRow(s, refresh)));
  };
  await refresh();
  page.every(2000, refresh);
}

function stat(label, value) {
  return h("div", { class: "stat card" }, h("div", { class: "stat-value" }, String(value)), h("div", { class: "stat-label" }, label));
}

function kindOf(view) {
  const spec = view.spec || {};
  return spec.processor ? `processor: ${spec.processor}` : "custom container";
}

function serviceRow(s, refresh) {
  const endpoint = s.endpoints.internet || s.endpoints.vpc;
  const stopped = s.desired_state === "stopped";
  return h("tr", { "data-service": s.name },
    h("td", {}, h("a", { href: `#/services/${encodeURIComponent(s.name)}`, class: "strong" }, s.name)),
    h("td", { title: s.message || "" }, badge(s.status)),
    h("td", { class: "num", "data-instances": `${s.running_instances}/${s.instance}` }, `${s.running_instances} / ${s.instance}`),
    h("td", { class: "nowrap" }, kindOf(s)),
    h("td", {}, s.gateway),
    h("td", { class: "endpoint-cell" }, endpoint ? [h("code", { class: "truncate", title: endpoint }, endpoint), copyButton(() => endpoint)] : "-"),
    h("td", { title: fmtTime(s.updated_at) }, fmtAgo(s.updated_at)),
    h("td", { class: "row-actions" },
      h("button", { type: "button", class: "btn btn-small", onclick: () => stopOrStart(s, refresh) }, stopped ? "Start" : "Stop"),
      h("button", { type: "button", class: "btn btn-small btn-danger-ghost", onclick: () => deleteService(s.name, refresh) }, "Delete")),
  );
}

async function stopOrStart(view, after) {
  try {
    if (view.desired_state === "stopped") {
      await services.start(view.name);
      toast(`Starting ${view.name}`, "ok");
    } else {
      const ok = await confirmDialog(`Stop ${view.name}?`, "Its instances are stopped and callers get 503 until it is started again. The endpoint and token stay.", "Stop", true);
      if (!ok) return;
      await services.stop(view.name);
      toast(`Stopped ${view.name}`, "ok");
    }
    await after();
  } catch (err) {
    toast(err.message, "bad");
  }
}

async function deleteService(name, after) {
  const ok = await confirmDialog(`Delete ${name}?`, "Its instances are stopped, and its endpoint and token stop working. This cannot be undone.", "Delete", true);
  if (!ok) return;
  try {
    await services.remove(name);
    toast(`Deleted ${name}`, "ok");
    await after();
  } catch (err) {
    toast(err.message, "bad");
  }
}

// -- deploy --------------------------------------------------------------------------------

const TEMPLATES = {
  "Chat demo (custom container)": {
    metadata: { name: "demo_chat", instance: 1, cpu: 1, memory: 512, rpc: { keepalive: 30000 } },
    containers: [{ command: "python3 -m openeas.examples.chat_service.app --port $PORT", port: 8000, health_check: { http_get: { path: "/health" } } }],
  },
  "Custom container": {
    metadata: { name: "my_service", instance: 1 },
    containers: [{ command: "python3 app.py --port $PORT", port: 8000, health_check: { http_get: { path: "/health" } } }],
  },
  "LLM (llm processor)": {
    metadata: { name: "my_llm", instance: 1, rpc: { keepalive: 120000 } },
    processor: "llm",
    model_path: "/path/to/model.gguf",
    model_config: { served_model_name: "my-model", n_ctx: 4096 },
  },
  "Embedding processor": {
    metadata: { name: "my_embedding", instance: 1 },
    processor: "embedding",
    model_path: "/path/to/sentence-transformers-model",
  },
  "scikit-learn processor": {
    metadata: { name: "my_sklearn", instance: 1 },
    processor: "sklearn",
    model_path: "/path/to/model.joblib",
  },
};

async function pageDeploy(root) {
  const area = h("textarea", { id: "spec-json", class: "code-input", rows: "18", spellcheck: "false", placeholder: '{"metadata": {"name": "my_service", "instance": 1}, "containers": [...]}' });
  const result = h("div", { id: "deploy-result" });
  const button = h("button", { type: "submit", class: "btn btn-primary", id: "deploy-submit" }, "Deploy");
  const form = h("form", { id: "deploy-form" },
    h("div", { class: "templates" }, h("span", { class: "muted" }, "Start from:"),
      Object.entries(TEMPLATES).map(([label, spec]) =>
        h("button", { type: "button", class: "btn btn-small", onclick: () => { area.value = JSON.stringify(spec, null, 2); area.focus(); } }, label))),
    area, result, h("div", { class: "form-actions" }, h("a", { class: "btn", href: "#/services" }, "Cancel"), button));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(result);
    const text = area.value.trim();
    try {
      JSON.parse(text);
    } catch (err) {
      result.append(errorBox(new ApiError(400, { code: "InvalidJSON", message: `the spec is not valid JSON: ${err.message}` })));
      return;
    }
    button.disabled = true;
    try {
      const view = await services.create(text);
      toast(`Service ${view.name} created`, "ok");
      location.hash = `#/services/${encodeURIComponent(view.name)}`;
    } catch (err) {
      result.append(errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  root.append(
    pageHeader("Deploy a service"),
    h("div", { class: "card" },
      h("p", {}, "Paste the service's JSON spec: the EAS format that ", h("code", {}, "openeas create"),
        " takes (metadata, containers or processor + model_path, networking, token...). A container's command must listen on ",
        h("code", {}, "$PORT"), "."),
      form),
  );
  area.focus();
}

// -- one service ---------------------------------------------------------------------------

async function pageService(root, page, name, tab = "overview") {
  let view;
  try {
    view = await services.get(name);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      root.append(h("p", { class: "crumbs" }, h("a", { href: "#/services" }, "Services")), errorBox(err));
      return;
    }
    throw err;
  }
  if (!page.alive) return;
  // the Queue tab only for Async services (the others have no queues)
  const tabList = SERVICE_TABS.filter((t) => !t.async || isAsync(view));
  if (!tabList.some((t) => t.id === tab)) tab = "overview";
  const state = { view, signature: null, signatureTried: false };
  const href = (id) => `#/services/${encodeURIComponent(name)}/${id}`;

  // header: built once, its live parts updated in place (buttons stay put under the pointer)
  const statusSlot = h("span", { id: "service-status" });
  const countSlot = h("span", { class: "muted", id: "service-count" });
  const messageSlot = h("div", { class: "alert alert-warn", hidden: true, id: "service-message" });
  const stopBtn = h("button", { type: "button", class: "btn", id: "stop-start", onclick: () => stopOrStart(state.view, refresh) });
  const header = h("div", {},
    h("p", { class: "crumbs" }, h("a", { href: "#/services" }, "Services"), " / ", name),
    h("div", { class: "page-head" },
      h("h1", {}, name, " ", statusSlot, " ", countSlot),
      h("div", { class: "page-actions" },
        h("button", { type: "button", class: "btn btn-primary", id: "view-endpoint", onclick: () => endpointPanel(state) }, "View Endpoint Information"),
        h("button", { type: "button", class: "btn", id: "scale", onclick: () => scaleDialog(state.view, refresh) }, "Scale"),
        stopBtn,
        h("button", { type: "button", class: "btn btn-danger-ghost", id: "delete", onclick: () => deleteService(name, async () => { location.hash = "#/services"; }) }, "Delete"))),
    messageSlot,
    tabBar(tabList, tab, href),
  );
  const body = h("div", { class: "tab-body", id: `tab-${tab}` });
  root.append(header, body);

  const updateHeader = () => {
    const v = state.view;
    clear(statusSlot).append(badge(v.status));
    countSlot.textContent = `${v.running_instances} / ${v.instance} instances`;
    countSlot.dataset.running = String(v.running_instances);
    stopBtn.textContent = v.desired_state === "stopped" ? "Start" : "Stop";
    messageSlot.hidden = !v.message;
    messageSlot.textContent = v.message || "";
  };
  let tabUpdate = null;
  const refresh = async () => {
    const v = await services.get(name);
    if (!page.alive) return;
    state.view = v;
    updateHeader();
    if (tabUpdate) await tabUpdate();
  };
  updateHeader();

  const tabs = { overview: tabOverview, monitoring: tabMonitoring, queue: tabQueue, instances: tabInstances, logs: tabLogs, debug: tabDebug, spec: tabSpec };
  tabUpdate = await tabs[tab](body, state, page);
  page.every(2000, async () => {
    try {
      await refresh();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        page.stop();
        body.prepend(h("div", { class: "alert alert-bad" }, `Service ${name} no longer exists.`));
      } else throw err;
    }
  });
}

function specSummary(spec) {
  const c = (spec.containers && spec.containers[0]) || {};
  const meta = spec.metadata || {};
  const rpc = meta.rpc || {};
  return [
    spec.processor ? ["Processor", spec.processor] : ["Command", h("code", { class: "wrap" }, c.command || c.script || "-")],
    spec.processor ? ["Model path", h("code", { class: "wrap" }, spec.model_path || "-")] : ["Container port", c.port ?? "-"],
    ["CPU / memory", `${meta.cpu ?? "-"} cores / ${meta.memory ? `${meta.memory} MB` : "-"}`],
    ["Request timeout (rpc.keepalive)", `${rpc.keepalive ?? 5000} ms`],
    ["Readiness check", c.health_check ? (c.health_check.http_get ? `HTTP GET ${c.health_check.http_get.path || "/"}` : "TCP connect") : spec.processor ? "HTTP GET /health" : "TCP connect"],
  ];
}

async function tabOverview(body, state) {
  const basic = h("div", { id: "basic-info" });
  const config = h("div", {});
  const warnings = h("div", {});
  body.append(
    h("div", { class: "grid-2" },
      h("section", { class: "card" },
        h("div", { class: "card-head" }, h("h2", {}, "Basic Information"),
          h("button", { type: "button", class: "btn btn-link", id: "view-endpoint-2", onclick: () => endpointPanel(state) }, "View Endpoint Information")),
        basic),
      h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Configuration")), config)),
    warnings,
  );
  const update = () => {
    const v = state.view;
    clear(basic).append(infoGrid([
      ["Service name", v.name],
      ["Status", [badge(v.status), v.message ? h("span", { class: "muted" }, ` ${v.message}`) : null]],
      ["Region", v.region],
      ["Instances", `${v.running_instances} ready / ${v.instance} wanted${v.desired_state === "stopped" ? " (stopped)" : ""}`],
      ["Type", kindOf(v)],
      ["Gateway", v.gateway],
      ["Internet endpoint", v.endpoints.internet ? h("code", { class: "wrap" }, v.endpoints.internet) : "not enabled"],
      ["VPC endpoint", v.endpoints.vpc ? h("code", { class: "wrap" }, v.endpoints.vpc) : "not enabled"],
      ["Created", fmtTime(v.created_at)],
      ["Updated", `${fmtTime(v.updated_at)} (revision ${v.revision})`],
    ]));
    clear(config).append(infoGrid(specSummary(v.spec || {})));
    clear(warnings);
    if (v.warnings && v.warnings.length) {
      warnings.append(h("div", { class: "alert alert-warn" }, h("strong", {}, "Spec warnings"), h("ul", {}, v.warnings.map((w) => h("li", {}, w)))));
    }
  };
  update();
  return update;
}

// Live charts from the gateways' request telemetry (GET .../metrics?window=S), redrawn on every
// refresh of the page (2 s): QPS, responses by status class, latency (p50/p99 at the gateway,
// mean time in the gateway itself and in the instance).
async function tabMonitoring(body, state, page) {
  let windowS = 300;
  const picker = h("select", { id: "metrics-window", onchange: () => { windowS = Number(picker.value); update(); } },
    [[300, "Last 5 min"], [600, "Last 10 min"], [60, "Last 1 min"]].map(([v, label]) => h("option", { value: String(v) }, label)));
  const summary = h("div", { class: "metrics-summary", id: "metrics-summary" });
  const qps = lineChart({ id: "chart-qps", title: "Requests per second", unit: "req/s", series: [{ key: "qps", label: "QPS", cls: "s-blue" }] });
  const codes = lineChart({ id: "chart-codes", title: "Responses by status", unit: "req/s", series: [
    { key: "c2xx", label: "2xx", cls: "s-green" }, { key: "c4xx", label: "4xx", cls: "s-amber" }, { key: "c5xx", label: "5xx", cls: "s-red" }] });
  const latency = lineChart({ id: "chart-latency", title: "Latency", unit: "ms", series: [
    { key: "p50", label: "p50", cls: "s-blue" }, { key: "p99", label: "p99", cls: "s-purple" },
    { key: "upstream", label: "mean in instance", cls: "s-green" }, { key: "gateway", label: "mean in gateway", cls: "s-amber" }] });
  body.append(
    h("div", { class: "card-head" }, summary, h("label", { class: "small muted" }, "Window ", picker)),
    h("div", { class: "charts" }, qps.el, codes.el, latency.el),
    h("p", { class: "muted small" }, "Measured by the gateways (every request through the Internet or VPC endpoint), read every second by the control plane. Prometheus: GET /metrics on the control API and on each gateway's metrics listener."),
  );
  const update = async () => {
    const data = await services.metrics(state.view.name, windowS);
    if (!page.alive) return;
    const t1 = data.now, t0 = t1 - data.window;
    const points = data.points.map((p) => ({
      t: p.t, qps: p.qps, c2xx: p.classes["2xx"] || 0, c4xx: p.classes["4xx"] || 0, c5xx: p.classes["5xx"] || 0,
      p50: p.p50_ms, p99: p.p99_ms, gateway: p.gateway_ms, upstream: p.upstream_ms,
    }));
    const tot = data.totals;
    qps.draw(points, t0, t1, { qps: tot.requests });
    codes.draw(points, t0, t1, { c2xx: tot.classes["2xx"] || 0, c4xx: tot.classes["4xx"] || 0, c5xx: tot.classes["5xx"] || 0 });
    latency.draw(points, t0, t1);
    const load = data.load || {};
    summary.dataset.requests = String(tot.requests);
    clear(summary).append(
      h("span", {}, h("strong", {}, String(tot.requests)), " requests in the window"),
      h("span", {}, h("strong", {}, fmtNum(load.qps ?? 0)), " req/s (last minute)"),
      h("span", {}, h("strong", {}, fmtNum(load.in_flight ?? 0)), " in flight"),
    );
    if (load.waiting) summary.append(h("span", {}, h("strong", {}, String(load.waiting)), " waiting for an instance"));
  };
  await update();
  return update;
}

// An Async service's queues (GET .../queue and .../queue/dead, the API behind `openeas queue
// stat|get`), redrawn on every refresh of the page (2 s); Retry posts .../queue/retry like
// `openeas queue retry`.
const DEAD_SHOWN = 100;
const DEAD_DATA_CHARS = 200;

function decodeData(b64) {
  try {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
    return text.length > DEAD_DATA_CHARS ? `${text.slice(0, DEAD_DATA_CHARS)}\u2026` : text;
  } catch {
    return "(not base64)";
  }
}

async function tabQueue(body, state, page) {
  const name = state.view.name;
  const summary = h("div", { class: "queue-summary", id: "queue-summary" });
  const problem = h("div", { class: "alert alert-warn", hidden: true, id: "queue-problem" });
  const deadBody = h("tbody", { id: "dead-body" });
  const retryAll = h("button", { type: "button", class: "btn btn-small", id: "retry-all", disabled: true }, "Retry all");
  const retry = async (indexes) => {
    try {
      const out = await services.retryDead(name, indexes);
      toast(`Retried ${out.retried} dead letter${out.retried === 1 ? "" : "s"}.`, "good");
      await update();
    } catch (err) {
      toast(err.message, "bad");
    }
  };
  retryAll.addEventListener("click", () => retry(null));
  body.append(
    problem,
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Queues")), summary),
    h("section", { class: "card card-flush" },
      h("div", { class: "card-head card-pad" }, h("h2", {}, "Dead letters"), retryAll),
      h("div", { class: "table-wrap" },
        h("table", { class: "table", id: "dead-table" },
          h("thead", {}, h("tr", {}, ["Index", "Request ID", "Deliveries", "Data", "Created", ""].map((t) => h("th", {}, t)))),
          deadBody))),
    h("p", { class: "muted small" }, "Requests go into the input queue at the service endpoint; the instances' answers go into the sink queue at ",
      h("code", {}, "<endpoint>/sink"), ". A request that failed queue.max_delivery times becomes a dead letter; Retry puts it back into the input queue (the same as ",
      h("code", {}, `openeas queue retry ${name}`), ")."),
  );
  let shown = "";
  const update = async () => {
    let stats, dead;
    try {
      [stats, dead] = await Promise.all([services.queue(name), services.deadLetters(name, DEAD_SHOWN)]);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 401 || err.status === 404) throw err;
      if (!page.alive) return;
      problem.hidden = false;
      problem.textContent = err.message; // e.g. the queue server is not running yet
      return;
    }
    if (!page.alive) return;
    problem.hidden = true;
    const inp = stats.input || {}, sink = stats.sink || {};
    const cell = (label, id, value, extra = "") =>
      h("div", { class: "queue-stat" }, h("div", { class: "muted small" }, label), h("strong", { id, "data-value": String(value ?? 0) }, String(value ?? 0)), extra ? h("div", { class: "muted small" }, extra) : null);
    clear(summary).append(
      cell("Input queue length", "queue-input-length", inp.length, `of at most ${inp.max_length ?? "-"}; oldest ${fmtNum(inp.oldest_age_s ?? 0)} s`),
      cell("In flight", "queue-in-flight", inp.in_flight, `${stats.instances ?? 0} instance(s) taking work`),
      cell("Dead letters", "queue-dead", inp.dead),
      cell("Sink queue length", "queue-sink-length", sink.length, `of at most ${sink.max_length ?? "-"}`),
      cell("Delivered", "queue-delivered", (stats.counters || {}).delivered, `${(stats.counters || {}).retried ?? 0} retried`),
    );
    const key = JSON.stringify(dead);
    if (key === shown) return;
    shown = key;
    retryAll.disabled = !dead.length;
    clear(deadBody).append(
      ...(dead.length
        ? dead.map((d) => h("tr", { "data-index": String(d.index) },
            h("td", { class: "num" }, String(d.index)),
            h("td", {}, h("code", {}, (d.tags && d.tags.requestId) || "")),
            h("td", { class: "num" }, String(d.deliveries ?? "")),
            h("td", {}, h("code", { class: "wrap" }, decodeData(d.data))),
            h("td", { title: fmtTime(d.created_at) }, fmtAgo(d.created_at)),
            h("td", {}, h("button", { type: "button", class: "btn btn-small", "data-retry": String(d.index), onclick: () => retry([d.index]) }, "Retry"))))
        : [h("tr", {}, h("td", { colspan: "6", class: "muted center" }, "No dead letters."))]),
    );
  };
  await update();
  return update;
}

async function tabInstances(body, state, page) {
  const tbody = h("tbody", { id: "instances-body" });
  body.append(
    h("div", { class: "card card-flush" },
      h("div", { class: "table-wrap" },
        h("table", { class: "table", id: "instances-table" },
          h("thead", {}, h("tr", {}, ["Instance", "State", "Address", "PID", "Restarts", "Revision", "Started", "Message"].map((t) => h("th", {}, t)))),
          tbody))),
  );
  let shown = "";
  const update = async () => {
    const data = await services.instances(state.view.name);
    if (!page.alive) return;
    const rows = data.instances.slice().sort((a, b) => a.id.localeCompare(b.id));
    const key = JSON.stringify(rows.map((i) => [i, fmtAgo(i.started_at)]));
    if (key === shown) return;
    shown = key;
    clear(tbody).append(
      ...(rows.length
        ? rows.map((i) => h("tr", { "data-instance": i.id, "data-state": i.state },
            h("td", {}, h("code", {}, i.id)), h("td", {}, badge(i.state)), h("td", {}, `${i.host}:${i.port}`),
            h("td", { class: "num" }, i.pid ?? "-"), h("td", { class: "num" }, i.restarts), h("td", { class: "num" }, i.revision),
            h("td", { title: fmtTime(i.started_at) }, fmtAgo(i.started_at)), h("td", { class: "muted" }, i.message || "")))
        : [h("tr", {}, h("td", { colspan: "8", class: "muted center" }, "No instances."))]),
    );
  };
  await update();
  return update;
}

async function tabLogs(body, state, page) {
  const select = h("select", { id: "log-instance" }, h("option", { value: "" }, "live instances"));
  const tail = h("select", { id: "log-tail" }, [100, 200, 500, 1000].map((n) => h("option", { value: String(n), selected: n === 200 }, `last ${n} lines`)));
  const auto = h("input", { type: "checkbox", id: "log-auto", checked: true });
  const out = h("div", { id: "logs-out" });
  const load = async () => {
    const data = await services.logs(state.view.name, select.value, tail.value);
    if (!page.alive) return;
    const known = new Set([...select.options].map((o) => o.value));
    for (const l of data.logs) if (!known.has(l.instance)) select.append(h("option", { value: l.instance }, l.instance));
    clear(out).append(
      ...(data.logs.length
        ? data.logs.map((l) => {
            const pre = h("pre", { class: "code logs", "data-instance": l.instance }, l.lines.join("\n") || "(empty)");
            return h("section", { class: "log-block" }, h("h3", {}, h("code", {}, l.instance)), pre);
          })
        : [h("p", { class: "muted" }, "No logs yet.")]),
    );
    for (const pre of out.querySelectorAll("pre")) pre.scrollTop = pre.scrollHeight;
  };
  const refreshBtn = h("button", { type: "button", class: "btn btn-small", onclick: () => load().catch((e) => toast(e.message, "bad")) }, "Refresh");
  select.addEventListener("change", () => load().catch((e) => toast(e.message, "bad")));
  tail.addEventListener("change", () => load().catch((e) => toast(e.message, "bad")));
  body.append(
    h("div", { class: "card" },
      h("div", { class: "toolbar" }, h("label", {}, "Instance ", select), h("label", {}, tail),
        h("label", { class: "check" }, auto, " auto-refresh"), refreshBtn),
      out),
  );
  await load();
  page.every(3000, async () => {
    if (auto.checked) await load();
  });
  return null;
}

function parseHeaderLines(text) {
  const headers = [];
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf(":");
    if (i <= 0) throw new Error(`header line ${n + 1} is not "Name: value"`);
    headers.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
  }
  return headers;
}

function prettyBody(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

async function tabDebug(body, state) {
  const v = state.view;
  const profile = profileOf(v, state.signature);
  const endpoints = ["internet", "vpc"].filter((w) => v.endpoints[w]);
  const endpointSel = h("select", { id: "debug-endpoint" }, endpoints.map((w) => h("option", { value: w }, w === "internet" ? "Internet" : "VPC")));
  const method = h("select", { id: "debug-method" }, ["POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].map((m) => h("option", { value: m }, m)));
  const base = h("code", { class: "debug-base" });
  const path = h("input", { type: "text", id: "debug-path", value: profile.path, spellcheck: "false", placeholder: "/v1/chat/completions" });
  const headers = h("textarea", { id: "debug-headers", class: "code-input", rows: "3", spellcheck: "false" });
  headers.value = "Content-Type: application/json";
  const reqBody = h("textarea", { id: "debug-body", class: "code-input", rows: "8", spellcheck: "false" });
  reqBody.value = typeof profile.body === "string" ? profile.body : prettyJson(profile.body);
  const timeout = h("input", { type: "number", id: "debug-timeout", min: "1", max: "120", value: "30", class: "input-narrow" });
  const send = h("button", { type: "submit", class: "btn btn-primary", id: "debug-send" }, "Send request");
  const result = h("div", { id: "debug-result", class: "debug-result" });
  const showBase = () => {
    base.textContent = state.view.endpoints[endpointSel.value] || "(no endpoint)";
  };
  endpointSel.addEventListener("change", showBase);
  showBase();
  const form = h("form", { id: "debug-form", class: "debug-form" },
    h("div", { class: "debug-line" }, endpointSel, method, base, path),
    h("label", { for: "debug-headers" }, "Headers ", h("span", { class: "muted" }, "(one Name: value per line; the service token is added as Authorization unless you set one)")),
    headers,
    h("label", { for: "debug-body" }, "Body"),
    reqBody,
    h("div", { class: "form-actions" }, h("label", {}, "Timeout (s) ", timeout), send),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(result);
    let hdrs;
    try {
      hdrs = parseHeaderLines(headers.value);
    } catch (err) {
      result.append(h("div", { class: "alert alert-bad" }, err.message));
      return;
    }
    send.disabled = true;
    send.textContent = "Sending...";
    try {
      const answer = await services.debug(state.view.name, {
        method: method.value, path: path.value.trim(), headers: hdrs,
        body: ["GET", "HEAD"].includes(method.value) ? "" : reqBody.value,
        endpoint: endpointSel.value || undefined, timeout: Number(timeout.value) || 30,
      });
      result.append(debugAnswer(answer));
    } catch (err) {
      result.append(errorBox(err));
    } finally {
      send.disabled = false;
      send.textContent = "Send request";
    }
  });
  body.append(
    h("div", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Online debug")),
      h("p", { class: "muted" }, "Send a request to this service through its gateway, with its token, and see the status, headers and body that come back."),
      form, result),
  );
  return null;
}

function debugAnswer(a) {
  const cls = a.status < 300 ? "ok" : a.status < 500 ? "warn" : "bad";
  const text = a.body_encoding === "base64" ? `(binary body, ${a.body_bytes} bytes, base64)\n${a.body}` : prettyBody(a.body);
  return h("div", { class: "card card-inner" },
    h("div", { class: "debug-status" },
      h("span", { class: `badge badge-${cls}`, id: "debug-status", "data-status": String(a.status) }, `${a.status} ${a.reason}`),
      h("span", { class: "muted" }, `${a.method} ${a.url}`),
      h("span", { class: "muted" }, `${a.elapsed_ms} ms, ${fmtBytes(a.body_bytes)}`)),
    a.note ? h("div", { class: "alert alert-warn" }, a.note) : null,
    h("details", { class: "debug-headers" }, h("summary", {}, `Response headers (${a.headers.length})`),
      h("table", { class: "table table-compact" }, h("tbody", {}, a.headers.map(([k, val]) => h("tr", {}, h("th", {}, k), h("td", {}, h("code", {}, val))))))),
    h("div", { class: "code-head" }, h("span", {}, "Response body"), copyButton(() => a.body)),
    h("pre", { class: "code", id: "debug-response" }, text || "(empty)"),
  );
}

async function tabSpec(body, state) {
  const pre = h("pre", { class: "code", id: "spec-view" });
  body.append(h("div", { class: "card" },
    h("div", { class: "code-head" }, h("span", {}, "Service spec (as stored; the token is shown in View Endpoint Information)"),
      copyButton(() => pre.textContent)),
    pre));
  const update = () => {
    pre.textContent = JSON.stringify(state.view.spec, null, 2);
  };
  update();
  return update;
}

function scaleDialog(view, after) {
  const m = modal(`Scale ${view.name}`);
  const input = h("input", { type: "number", id: "scale-count", min: "0", max: "1000", value: String(view.instance), class: "input-narrow" });
  const error = h("div", { class: "form-error", role: "alert" });
  const form = h("form", { id: "scale-form" },
    h("label", { for: "scale-count" }, "Instances"), input,
    h("p", { class: "muted small" }, "New instances start and pass their readiness check before they take traffic; 0 keeps the service with no instance."),
    error,
    h("div", { class: "form-actions" },
      h("button", { type: "button", class: "btn", onclick: () => m.close() }, "Cancel"),
      h("button", { type: "submit", class: "btn btn-primary", "data-action": "scale" }, "Scale")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await services.scale(view.name, Number.parseInt(input.value, 10));
      toast(`Scaling ${view.name} to ${input.value}`, "ok");
      m.close();
      await after();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  m.body.append(form);
  input.select();
}

// -- View Endpoint Information -------------------------------------------------------------

// While a rotation keeps the previous token (`openeas token rotate`), both open the service:
// show the old one too, so callers still on it can be found before `openeas token revoke --old`.
function oldTokenRow(v) {
  if (!v.old_token) return null;
  const code = h("code", { class: "secret", id: "old-token-value", "data-shown": "false" }, mask(v.old_token));
  const showBtn = h("button", { type: "button", class: "btn btn-small", id: "old-token-show" }, "Show");
  showBtn.addEventListener("click", () => {
    const shown = code.dataset.shown === "true";
    code.textContent = shown ? mask(v.old_token) : v.old_token;
    code.dataset.shown = String(!shown);
    showBtn.textContent = shown ? "Show" : "Hide";
  });
  return h("div", { class: "kv-row", id: "old-token-row" }, h("div", { class: "kv-label" }, "Old token (valid until revoked)"),
    h("div", { class: "kv-value" }, code),
    h("div", { class: "kv-actions" }, showBtn, copyButton(() => v.old_token, "Copy", "copy-old-token")));
}

function endpointPanel(state) {
  const v = state.view;
  const m = modal("Invocation Method", { wide: true, id: "endpoint-panel" });
  const tokenCode = h("code", { class: "secret", id: "token-value", "data-shown": "false" }, mask(v.token));
  const showBtn = h("button", { type: "button", class: "btn btn-small", id: "token-show" }, "Show");
  showBtn.addEventListener("click", () => {
    const shown = tokenCode.dataset.shown === "true";
    tokenCode.textContent = shown ? mask(v.token) : v.token;
    tokenCode.dataset.shown = String(!shown);
    showBtn.textContent = shown ? "Show" : "Hide";
  });
  const row = (label, id, value, extra = null) =>
    h("div", { class: "kv-row" }, h("div", { class: "kv-label" }, label),
      h("div", { class: "kv-value" }, value ? (typeof value === "string" ? h("code", { id }, value) : value) : h("span", { class: "muted" }, "not enabled on this gateway")),
      h("div", { class: "kv-actions" }, extra, value ? copyButton(() => (typeof value === "string" ? value : v.token), "Copy", `copy-${id}`) : null));
  const profile = profileOf(v, state.signature);
  const which = ["internet", "vpc"].filter((w) => v.endpoints[w]);
  let chosen = which[0] || "internet";
  let exampleTab = "curl";
  const examplesBox = h("div", { id: "examples" });
  const noteBox = h("p", { class: "muted small", id: "example-note" });
  const endpointChoice = h("div", { class: "segmented", role: "radiogroup" });

  const drawExamples = () => {
    const list = examplesFor(state.view, chosen, state.signature);
    const prof = profileOf(state.view, state.signature);
    noteBox.hidden = !prof.note;
    noteBox.textContent = prof.note;
    clear(endpointChoice).append(
      h("span", { class: "muted" }, "Examples use the "),
      ...which.map((w) => h("button", { type: "button", class: w === chosen ? "seg active" : "seg", "data-endpoint": w,
        onclick: () => { chosen = w; drawExamples(); } }, w === "internet" ? "Internet endpoint" : "VPC endpoint")),
    );
    clear(examplesBox);
    if (!list.length) {
      examplesBox.append(h("p", { class: "muted" }, "This service has no endpoint to call."));
      return;
    }
    if (!list.some((e) => e.id === exampleTab)) exampleTab = list[0].id;
    const ex = list.find((e) => e.id === exampleTab);
    examplesBox.append(
      h("nav", { class: "tabs tabs-small", role: "tablist" },
        list.map((e) => h("button", { type: "button", role: "tab", class: e.id === exampleTab ? "tab active" : "tab", "data-example": e.id,
          onclick: () => { exampleTab = e.id; drawExamples(); } }, e.label))),
      h("div", { class: "code-head" }, h("span", {}, `${ex.label}${ex.lang === "bash" ? ": paste into a shell" : ""}`),
        copyButton(() => ex.code, "Copy", "copy-example")),
      h("pre", { class: `code lang-${ex.lang}`, id: `example-${ex.id}`, "data-example-code": ex.id }, ex.code),
    );
  };

  m.body.append(
    h("section", { class: "panel-section" },
      row("Internet endpoint", "endpoint-internet", v.endpoints.internet),
      row("VPC endpoint", "endpoint-vpc", v.endpoints.vpc),
      ...(isAsync(v) ? [
        row("Internet sink endpoint", "endpoint-sink-internet", v.endpoints.internet ? v.endpoints.internet + "/sink" : null),
        row("VPC sink endpoint", "endpoint-sink-vpc", v.endpoints.vpc ? v.endpoints.vpc + "/sink" : null),
      ] : []),
      row("Token", "token", tokenCode, showBtn),
      oldTokenRow(v)),
    h("p", { class: "hint" }, "The endpoint is a base URL: append the model's API path",
      profile.path ? [" (here ", h("code", {}, profile.path), ")"] : "",
      ". A wrong path is the most common cause of a 404. Send the token in the ", h("code", {}, "Authorization"), " header."),
    h("section", { class: "panel-section" },
      h("h3", {}, "Call examples ", h("span", { class: "muted small" }, `(${profile.label})`)),
      endpointChoice,
      noteBox,
      examplesBox),
  );
  drawExamples();
  // A generic processor's signature makes a better body: ask the service once (GET on its endpoint).
  if (profile.kind === "generic" && !state.signatureTried && state.view.status === "Running") {
    state.signatureTried = true;
    services.debug(v.name, { method: "GET", path: "", timeout: 5 })
      .then((a) => {
        if (a.status === 200) {
          state.signature = JSON.parse(a.body);
          if (m.dialog.open) drawExamples();
        }
      })
      .catch(() => {});
  }
}

function mask(token) {
  return token ? `${token.slice(0, 4)}${"\u2022".repeat(12)}${token.slice(-4)}` : "";
}

// -- gateways ------------------------------------------------------------------------------

const ANYONE = new Set(["0.0.0.0/0", "::/0"]);

function gatewayList(data) {
  if (Array.isArray(data)) return data;
  return (data && (data.gateways || data.items)) || [];
}

async function pageGateways(root, page) {
  const noteBox = h("div", { class: "alert alert-info", hidden: true });
  const cards = h("div", { id: "gateway-cards" });
  root.append(pageHeader("Gateways"), noteBox, cards);
  let shown = "";
  const refresh = async () => {
    const svcList = (await services.list()).services;
    let list;
    let note = "";
    try {
      list = gatewayList(await gateways.list());
    } catch (err) {
      if (!(err instanceof ApiError && (err.status === 404 || err.status === 405))) throw err;
      note = "This server has no gateway API (/api/v2/gateways): shown are the gateways its services use, with their endpoints.";
      list = fallbackGateways(svcList);
    }
    if (!page.alive) return;
    // the shared gateway first, then by name
    list.sort((a, b) => (a.name === "shared" ? -1 : b.name === "shared" ? 1 : String(a.name).localeCompare(String(b.name))));
    const key = JSON.stringify([list, svcList.map((s) => [s.name, s.gateway]), note]);
    if (key === shown) return;
    shown = key;
    noteBox.hidden = !note;
    noteBox.textContent = note;
    clear(cards).append(...(list.length ? list.map((g) => gatewayCard(g, svcList)) : [h("p", { class: "muted" }, "No gateways.")]));
  };
  await refresh();
  page.every(3000, refresh);
}

function fallbackGateways(svcList) {
  const byName = new Map();
  for (const s of svcList) {
    const g = byName.get(s.gateway) || { name: s.gateway, endpoints: { internet: null, intranet: null }, services: [] };
    const base = (url) => (url ? url.slice(0, url.length - `/api/predict/${s.name}`.length) : null);
    g.endpoints.internet = g.endpoints.internet || base(s.endpoints.internet);
    g.endpoints.intranet = g.endpoints.intranet || base(s.endpoints.vpc);
    g.services.push(s.name);
    byName.set(s.gateway, g);
  }
  return [...byName.values()];
}

function aclTable(title, entries, emptyText, absentText = emptyText) {
  return h("div", { class: "acl" },
    h("h3", {}, title),
    entries === undefined || entries === null
      ? h("p", { class: "muted" }, absentText)
      : entries.length
      ? h("table", { class: "table table-compact" },
          h("thead", {}, h("tr", {}, h("th", {}, "CIDR"), h("th", {}, "Comment"))),
          h("tbody", {}, entries.map((e) => (typeof e === "string" ? { entry: e } : e)).map((e) => h("tr", {}, h("td", {}, h("code", {}, e.entry)), h("td", {}, e.comment || (ANYONE.has(e.entry) ? "anyone" : ""))))))
      : h("p", { class: "muted" }, emptyText));
}

function gatewayCard(g, svcList) {
  // A view of GET /api/v2/gateways ({name, type, status, message, endpoints: {internet, intranet}
  // (base URLs), listeners, services, spec}) or, without that API, what fallbackGateways knows.
  const spec = g.spec && typeof g.spec === "object" ? g.spec : g;
  const name = g.name || spec.name || "?";
  const bases = g.endpoints || spec.advertise || {};
  const internet = bases.internet || null;
  const vpc = bases.intranet || bases.vpc || null;
  const listen = { ...(spec.listen || {}), ...(g.listeners || {}) };
  const using = Array.isArray(g.services) ? g.services : svcList.filter((s) => s.gateway === name).map((s) => s.name);
  const type = g.type || (name === "shared" ? "shared" : "dedicated");
  const limit = (n) => (n ? `${n} QPS` : "none");
  const tls = spec.tls
    ? `on${spec.tls.domains && spec.tls.domains.length ? ` (${spec.tls.domains.join(", ")})` : ""}${spec.ssl_redirect ? ", HTTP redirected to HTTPS" : ""}`
    : "off";
  return h("section", { class: "card gateway-card", "data-gateway": name },
    h("div", { class: "card-head" },
      h("h2", {}, name, " ", g.status ? badge(g.status) : null, " ", h("span", { class: "tag" }, type))),
    g.message ? h("div", { class: "alert alert-warn" }, g.message) : null,
    infoGrid([
      ["Internet endpoint", internet ? h("code", { class: "wrap" }, `${internet}/api/predict/<service>`) : "Internet access off"],
      listen.internet ? ["Internet listener", h("code", {}, listen.internet)] : null,
      ["VPC endpoint", vpc ? h("code", { class: "wrap" }, `${vpc}/api/predict/<service>`) : "VPC access off"],
      listen.intranet ? ["VPC listener", h("code", {}, listen.intranet)] : null,
      "listen" in spec ? ["TLS", tls] : null,
      spec.max_body_bytes ? ["Max request body", fmtBytes(spec.max_body_bytes)] : null,
      "rate_limit" in spec ? ["Rate limit per service / group", `${limit(spec.rate_limit)} / ${limit(spec.group_rate_limit)}`] : null,
      spec.replicas ? ["Replicas / workers", `${spec.replicas} / ${spec.workers ?? 1}`] : null,
      ["Services", using.length ? using.map((s, i) => [i ? ", " : "", h("a", { href: `#/services/${encodeURIComponent(s)}` }, s)]) : "none"],
    ]),
    "internet_acl" in spec || "intranet_acl" in spec
      ? h("div", { class: "grid-2" },
          aclTable("Internet allow-list", spec.internet_acl, "empty: no Internet caller is allowed", "not set: anyone"),
          aclTable("VPC allow-list", spec.intranet_acl, "empty: any VPC caller is allowed"))
      : null,
    spec.trusted_proxies && spec.trusted_proxies.length ? aclTable("Trusted proxies (X-Forwarded-For)", spec.trusted_proxies, "") : null,
    h("details", {}, h("summary", {}, "Record (JSON)"), h("pre", { class: "code" }, JSON.stringify(g, null, 2))),
  );
}

// -- start ---------------------------------------------------------------------------------

window.addEventListener("openeas:logout", (e) => {
  loginMessage = e.detail;
  location.hash = "#/login";
});
window.addEventListener("hashchange", render);
document.getElementById("logout").addEventListener("click", () => {
  session.clear();
  location.hash = "#/login";
});
render();
