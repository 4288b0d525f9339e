// The /api/v2 client. The admin token lives in sessionStorage (this tab only, gone when the tab
// closes) and travels only in the Authorization header: never in a URL, never in a log.

const TOKEN_KEY = "openeas.adminToken";
const REGION_KEY = "openeas.region";
export const PREFIX = "/api/v2";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  region: () => sessionStorage.getItem(REGION_KEY) || "local",
  set(token, region) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(REGION_KEY, region);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(REGION_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "";
    this.body = body || {};
  }
}

async function call(method, path, body, token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(PREFIX + path, init);
  } catch (err) {
    throw new ApiError(0, { code: "Unreachable", message: `cannot reach the control API (${err.message}); is openeas server running?` });
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { code: "NotJSON", message: text.slice(0, 300) };
    }
  }
  if (!resp.ok) {
    if (resp.status === 401 && token) {
      session.clear();
      window.dispatchEvent(new CustomEvent("openeas:logout", { detail: "Your session ended (the admin token was refused); log in again." }));
    }
    throw new ApiError(resp.status, data);
  }
  return data;
}

/** Check a token and remember it with the server's region. */
export async function login(token) {
  const health = await call("GET", "/health");
  await call("GET", "/services", undefined, token);
  session.set(token, (health && health.region) || "local");
}

export const api = {
  get: (path) => call("GET", path, undefined, session.token()),
  post: (path, body) => call("POST", path, body ?? {}, session.token()),
  put: (path, body) => call("PUT", path, body, session.token()),
  del: (path) => call("DELETE", path, undefined, session.token()),
};

const svcPath = (name) => `/services/${encodeURIComponent(session.region())}/${encodeURIComponent(name)}`;

export const services = {
  list: () => api.get("/services"),
  get: (name) => api.get(svcPath(name)),
  create: (specText) => api.post("/services", specText),
  remove: (name) => api.del(svcPath(name)),
  stop: (name) => api.post(svcPath(name) + "/stop"),
  start: (name) => api.post(svcPath(name) + "/start"),
  scale: (name, n) => api.post(svcPath(name) + "/scale", { instance: n }),
  instances: (name) => api.get(svcPath(name) + "/instances"),
  logs: (name, instance, tail) => {
    const q = new URLSearchParams({ tail: String(tail) });
    if (instance) q.set("instance", instance);
    return api.get(svcPath(name) + "/logs?" + q.toString());
  },
  debug: (name, request) => api.post(svcPath(name) + "/debug", request),
  queue: (name) => api.get(svcPath(name) + "/queue"),
  deadLetters: (name, limit) => api.get(svcPath(name) + `/queue/dead?limit=${encodeURIComponent(String(limit))}`),
  retryDead: (name, indexes) => api.post(svcPath(name) + "/queue/retry", indexes ? { indexes } : {}),
  metrics: (name, windowS) => api.get(svcPath(name) + `/metrics?window=${encodeURIComponent(String(windowS))}`),
};

export const gateways = {
  list: () => api.get("/gateways"),
};
