// Ready-to-run call examples (cURL, Python requests, OpenAI SDK, eas-prediction SDK), filled in
// with a service's real endpoint and token and a request body that fits what it runs.
// Pure functions of the service view (GET /api/v2/services/{region}/{name}): no DOM, no fetch.

const CHAT_DEMO = /openeas\.examples\.chat_service/;
const GENERIC = ["onnx", "sklearn", "pmml", "torchscript"];
const MODEL_FILE = /\.(gguf|bin|safetensors|pt|pth|onnx)$/i;
const MAX_SAMPLE_VALUES = 64;

function modelConfig(spec) {
  let mc = spec.model_config;
  if (typeof mc === "string") {
    try {
      mc = JSON.parse(mc);
    } catch {
      mc = {};
    }
  }
  return mc && typeof mc === "object" && !Array.isArray(mc) ? mc : {};
}

/** The model name a processor serves: model_config.served_model_name (or the first of a list),
 * else the model file's name without its suffix, or the model directory's name. */
export function servedModel(spec) {
  const mc = modelConfig(spec);
  const value = mc.served_model_name ?? mc.model_name;
  if (typeof value === "string" && value) return value;
  if (Array.isArray(value) && typeof value[0] === "string" && value[0]) return value[0];
  const base = String(spec.model_path || "").replace(/\/+$/, "").split("/").pop() || "model";
  return base.replace(MODEL_FILE, "");
}

function chatBody(model, maxTokens = 0) {
  const body = {
    model,
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "hello!" },
    ],
  };
  if (maxTokens) body.max_tokens = maxTokens; // an answer in seconds, not minutes, on a CPU
  return body;
}

function sampleValue(dtype) {
  const t = String(dtype || "").toLowerCase();
  if (/str|object|byte/.test(t)) return "text";
  if (t.includes("bool")) return false;
  if (t.includes("int")) return 1;
  return 0.5;
}

function sampleTensor(shape, dtype) {
  const dims = (Array.isArray(shape) ? shape : [-1]).map((d) => (Number(d) > 0 ? Number(d) : 1));
  const build = (i) => (i === dims.length ? sampleValue(dtype) : Array.from({ length: dims[i] }, () => build(i + 1)));
  return build(0);
}

/** A JSON body for a generic processor, built from its signature (GET <endpoint>): one row of
 * sample values per input. null when the signature is missing or the sample would be large. */
export function genericBody(processor, signature) {
  const inputs = signature && Array.isArray(signature.inputs) ? signature.inputs : [];
  if (!inputs.length) return null;
  let values = 0;
  for (const inp of inputs) {
    values += (Array.isArray(inp.shape) ? inp.shape : [-1]).reduce((n, d) => n * (Number(d) > 0 ? Number(d) : 1), 1);
  }
  if (values > MAX_SAMPLE_VALUES) return null;
  if (processor === "pmml") {
    // the EAS PMML format: a list of records, one field per input
    return [Object.fromEntries(inputs.map((i) => [i.name, sampleValue(i.dtype || i.type)]))];
  }
  if (inputs.length === 1) return { inputs: sampleTensor(inputs[0].shape, inputs[0].dtype || inputs[0].type) };
  return { inputs: Object.fromEntries(inputs.map((i) => [i.name, sampleTensor(i.shape, i.dtype || i.type)])) };
}

/**
 * What to call and with what: {kind, label, method, path, body, model, openai, note}.
 * kind: chat (llm processor, the chat demo), embedding, rerank, generic (onnx, sklearn, pmml,
 * torchscript), custom (any other container). `signature`: a generic processor's GET / answer.
 */
export function profileOf(view, signature = null) {
  const spec = (view && view.spec) || {};
  const processor = spec.processor || "";
  const container = (spec.containers && spec.containers[0]) || {};
  const command = String(container.command || container.script || "");
  if (processor === "llm") {
    return { kind: "chat", label: "LLM (OpenAI-compatible)", method: "POST", path: "/v1/chat/completions",
             body: chatBody(servedModel(spec), 128), model: servedModel(spec), openai: "chat", note: "" };
  }
  if (!processor && CHAT_DEMO.test(command)) {
    return { kind: "chat", label: "custom container (OpenAI-style chat demo)", method: "POST",
             path: "/v1/chat/completions", body: chatBody("demo"), model: "demo", openai: "chat", note: "" };
  }
  if (processor === "embedding") {
    const model = servedModel(spec);
    return { kind: "embedding", label: "embedding (OpenAI-compatible)", method: "POST", path: "/v1/embeddings",
             body: { model, input: ["What is EAS?", "EAS serves models behind a gateway."] }, model,
             openai: "embeddings", note: "" };
  }
  if (processor === "rerank") {
    const model = servedModel(spec);
    return { kind: "rerank", label: "rerank", method: "POST", path: "/v1/rerank", model, openai: null, note: "",
             body: { model, query: "What is EAS?", top_n: 2,
                     documents: ["EAS deploys model services behind a gateway.", "Bananas are rich in potassium."] } };
  }
  if (processor) {
    const body = genericBody(processor, signature);
    const note = body
      ? `Built from the model's signature (GET on the endpoint answers it).`
      : `Put your model's inputs in "inputs" (GET on the endpoint answers the model's signature).`;
    return { kind: "generic", label: `${processor} processor (EAS generic)`, method: "POST", path: "",
             body: body || { inputs: [[1.0, 2.0, 3.0, 4.0]] }, model: "", openai: null, note };
  }
  return { kind: "custom", label: "custom container", method: "POST", path: "/", body: { hello: "world" }, model: "",
           openai: null, note: "A custom service takes whatever its own code expects: change the path and body to fit it." };
}

// -- quoting -------------------------------------------------------------------------------

/** A POSIX shell word: single quotes, with ' written as '\'' */
export function shellQuote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

/** A Python string literal: double quotes (JSON's escapes are valid Python), or single quotes
 * for text full of double quotes (JSON text) when that needs no escape. */
export function pyStr(s) {
  s = String(s);
  if (s.includes('"') && /^[\x20-\x7e]*$/.test(s) && !/['\\]/.test(s)) return `'${s}'`;
  return JSON.stringify(s);
}

/** A JSON value written as a Python literal (None/True/False), indented like json.dumps(indent=4)
 * but with short lists and objects kept on one line. */
export function pyLiteral(value, indent = 0) {
  return literal(value, indent, true);
}

/** JSON text laid out for reading: 2-space indents, short lists and objects on one line. */
export function prettyJson(value) {
  return literal(value, 0, false);
}

function literal(value, indent, py) {
  const step = py ? 4 : 2;
  const pad = (n) => " ".repeat(n);
  const tail = py ? "," : "";
  if (value === null || value === undefined) return py ? "None" : "null";
  if (value === true) return py ? "True" : "true";
  if (value === false) return py ? "False" : "false";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : py ? "None" : "null";
  if (typeof value === "string") return JSON.stringify(value);
  const short = (text) => text.length + indent <= 88 && !text.includes("\n");
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const inline = `[${value.map((v) => literal(v, 0, py)).join(", ")}]`;
    if (short(inline)) return inline;
    return `[\n${value.map((v) => pad(indent + step) + literal(v, indent + step, py)).join(",\n")}${tail}\n${pad(indent)}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  const inline = `{${entries.map(([k, v]) => `${JSON.stringify(k)}: ${literal(v, 0, py)}`).join(", ")}}`;
  if (short(inline) && indent > 0) return inline;
  return `{\n${entries.map(([k, v]) => `${pad(indent + step)}${JSON.stringify(k)}: ${literal(v, indent + step, py)}`).join(",\n")}${tail}\n${pad(indent)}}`;
}

function bodyText(body, pretty) {
  if (body === null || body === undefined) return "";
  if (typeof body === "string") return body;
  return pretty ? prettyJson(body) : JSON.stringify(body);
}

// -- the examples --------------------------------------------------------------------------

/** cURL, as EAS shows it; works pasted into bash/zsh/sh as-is. */
export function curlExample(url, token, profile) {
  const body = bodyText(profile.body, true);
  const parts = [`curl ${shellQuote(url)}`];
  if (body) parts.push(`-H 'Content-Type: application/json'`);
  parts.push(`-H ${shellQuote(`Authorization: ${token}`)}`);
  parts.push(`-X ${profile.method}`);
  if (body) parts.push(`-d ${shellQuote(body)}`);
  return parts.join(" \\\n  ");
}

export function requestsExample(url, token, profile) {
  const hasBody = profile.body !== null && profile.body !== undefined;
  const lines = [
    "import requests",
    "",
    `url = ${pyStr(url)}`,
    "# The Authorization header carries the service token.",
    "headers = {",
    ...(hasBody ? [`    "Content-Type": "application/json",`] : []),
    `    "Authorization": ${pyStr(token)},`,
    "}",
  ];
  if (hasBody) lines.push(`data = ${pyLiteral(profile.body)}`, "");
  lines.push(
    `resp = requests.${profile.method.toLowerCase()}(url, ${hasBody ? "json=data, " : ""}headers=headers, timeout=60)`,
    "print(resp.status_code)",
    "print(resp.text)",
  );
  return lines.join("\n");
}

/** The OpenAI SDK: base_url=<endpoint>/v1, api_key=<token> (sent as "Bearer <token>"). */
export function openaiExample(endpoint, token, profile) {
  const head = [
    "from openai import OpenAI",
    "",
    "client = OpenAI(",
    `    base_url=${pyStr(endpoint + "/v1")},`,
    `    api_key=${pyStr(token)},`,
    ")",
  ];
  if (profile.openai === "embeddings") {
    return [
      ...head,
      "result = client.embeddings.create(",
      `    model=${pyStr(profile.model)},`,
      `    input=${pyLiteral(profile.body.input, 4)},`,
      ")",
      "for item in result.data:",
      "    print(item.index, len(item.embedding), item.embedding[:4])",
    ].join("\n");
  }
  return [
    ...head,
    "completion = client.chat.completions.create(",
    `    model=${pyStr(profile.model)},`,
    `    messages=${pyLiteral(profile.body.messages, 4)},`,
    ...(profile.body.max_tokens ? [`    max_tokens=${profile.body.max_tokens},`] : []),
    ")",
    "print(completion.choices[0].message.content)",
  ].join("\n");
}

/** The official eas-prediction SDK (unmodified). It always POSTs to <endpoint>; an API path
 * (or an https endpoint) goes through custom_url. */
export function easExample(endpoint, service, token, profile) {
  const u = new URL(endpoint);
  const hostPort = u.host;
  const needsUrl = Boolean(profile.path && profile.path !== "/") || u.protocol !== "http:";
  const body = bodyText(profile.body, false);
  const lines = ["from eas_prediction import PredictClient, StringRequest", ""];
  if (needsUrl) {
    lines.push(
      `# The SDK posts to the endpoint itself; custom_url adds the API path ${profile.path || ""}.`,
      "client = PredictClient(",
      `    ${pyStr(hostPort)},`,
      `    ${pyStr(service)},`,
      `    custom_url=${pyStr(endpoint + (profile.path || ""))},`,
      ")",
    );
  } else {
    lines.push(`client = PredictClient(${pyStr(hostPort)}, ${pyStr(service)})`);
  }
  lines.push(`client.set_token(${pyStr(token)})`);
  if (profile.kind === "chat") lines.push("client.set_timeout(60000)  # milliseconds; the SDK's default is 5 s");
  lines.push("client.init()", "", `request = StringRequest(${pyStr(body)})`, "response = client.predict(request)", "print(response)");
  return lines.join("\n");
}

/** Whether a service is an Async one (metadata.type "Async"): an input queue and a sink queue
 * behind its endpoint (docs/async.md). */
export function isAsync(view) {
  const meta = (view && view.spec && view.spec.metadata) || {};
  return meta.type === "Async";
}

/** The eas-prediction QueueClient (unmodified): put into the input queue (<endpoint>), watch the
 * sink queue (<endpoint>/sink) for the result, by request id. Long polling (get with a timeout)
 * rather than sink.watch(): plain HTTP works through the gateway and any proxy. */
export function queueExample(endpoint, service, token, profile) {
  const u = new URL(endpoint);
  const body = bodyText(profile.body, false);
  return [
    "from eas_prediction import QueueClient",
    "",
    `endpoint = ${pyStr(u.host)}`,
    `token = ${pyStr(token)}`,
    "",
    "# the input queue is the service endpoint; the results arrive in its sink queue (<endpoint>/sink)",
    `inputs = QueueClient(endpoint, ${pyStr(service)})`,
    "inputs.set_token(token)",
    "inputs.init()",
    `sink = QueueClient(endpoint, ${pyStr(service + "/sink")})`,
    "sink.set_token(token)",
    "sink.init()",
    "",
    `index, request_id = inputs.put(${pyStr(body)}.encode())`,
    "print('queued', index, request_id)",
    "",
    "# wait for its result in the sink: HTTP long polling by request id (each call waits up to 5 s)",
    "results = []",
    "while not results:",
    "    results = sink.get(request_id=request_id, timeout=\"5s\")",
    "for df in results:",
    "    print(df.tags.get(\"lastCode\"), df.data.decode())",
    "    sink.delete(df.index)  # done with it: take it out of the sink",
  ].join("\n");
}

/**
 * The examples for one service and one of its endpoints ("internet" or "vpc"):
 * [{id, label, lang, code}]. Empty when the service has no such endpoint.
 */
export function examplesFor(view, which, signature = null) {
  const endpoint = view.endpoints && view.endpoints[which];
  if (!endpoint) return [];
  const profile = profileOf(view, signature);
  const url = endpoint + profile.path;
  const out = [
    { id: "curl", label: "cURL", lang: "bash", code: curlExample(url, view.token, profile) },
    { id: "python", label: "Python (requests)", lang: "python", code: requestsExample(url, view.token, profile) },
  ];
  if (profile.openai) out.push({ id: "openai", label: "OpenAI SDK", lang: "python", code: openaiExample(endpoint, view.token, profile) });
  out.push({ id: "eas", label: "eas-prediction SDK", lang: "python", code: easExample(endpoint, view.name, view.token, profile) });
  if (isAsync(view)) {
    out.push({ id: "queue", label: "QueueClient (input + sink)", lang: "python", code: queueExample(endpoint, view.name, view.token, profile) });
  }
  return out;
}
