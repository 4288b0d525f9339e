// Small DOM helpers. Text always goes in through textContent (never innerHTML): service names,
// log lines and answers from services are data, not markup.

/**
 * h("div", {class: "card", onclick: fn, "data-x": "1"}, child, "text", [more children])
 * Attributes: `class`, `text`, `on<event>` handlers, properties (value, checked, disabled,
 * selected, hidden), anything else via setAttribute. Children: nodes, strings, arrays, null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (["value", "checked", "disabled", "selected", "hidden", "open"].includes(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fmtTime(epochSeconds) {
  if (!epochSeconds) return "-";
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(epochSeconds) {
  if (!epochSeconds) return "-";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

const STATUS_CLASS = {
  Running: "ok", ready: "ok",
  Waiting: "wait", Scaling: "wait", starting: "wait", stopping: "wait", Creating: "wait",
  Stopped: "off", unready: "warn",
  Failed: "bad", failed: "bad", DeleteFailed: "bad",
};

export function badge(status) {
  return h("span", { class: `badge badge-${STATUS_CLASS[status] || "off"}`, "data-status": status }, status || "-");
}

/** Copy text to the clipboard: the async Clipboard API where the page is a secure context
 * (https, or http on localhost), else a hidden textarea and execCommand("copy"). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // fall through to the old way (e.g. permission refused)
    }
  }
  const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

/** A "Copy" button; `getText` is called on click. The copied text is also kept on the button
 * (`data-copied`) so that tests and scripts can read what was copied. */
export function copyButton(getText, label = "Copy", extraClass = "") {
  const btn = h("button", { type: "button", class: `btn btn-small ${extraClass}`.trim(), title: "Copy to the clipboard" }, label);
  btn.addEventListener("click", async () => {
    const text = getText();
    const ok = await copyText(text);
    btn.dataset.copied = text;
    btn.textContent = ok ? "Copied" : "Copy failed";
    btn.classList.toggle("btn-done", ok);
    setTimeout(() => {
      btn.textContent = label;
      btn.classList.remove("btn-done");
    }, 1500);
    if (!ok) toast("The browser refused to copy; select the text and copy it by hand.", "bad");
  });
  return btn;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = h("div", { class: `toast toast-${kind}`, role: "status" }, message);
  box.append(item);
  setTimeout(() => item.classList.add("toast-hide"), 3500);
  setTimeout(() => item.remove(), 4000);
}

/** A key/value grid (the "Basic Information" look). rows: [[label, value-node-or-text], ...] */
export function infoGrid(rows) {
  return h(
    "dl",
    { class: "info-grid" },
    rows.filter(Boolean).map(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "-")]),
  );
}

/** A tab bar; `tabs`: [{id, label}], `active`: id, `href(id)`: link target. */
export function tabBar(tabs, active, href) {
  return h(
    "nav",
    { class: "tabs", role: "tablist" },
    tabs.map((t) =>
      h("a", {
        href: href(t.id),
        role: "tab",
        class: t.id === active ? "tab active" : "tab",
        "aria-selected": t.id === active ? "true" : "false",
        "data-tab": t.id,
        text: t.label,
      }),
    ),
  );
}

/** A modal dialog (native <dialog>); returns {dialog, body, close}. Removed from the page on close. */
export function modal(title, { wide = false, id = "" } = {}) {
  const body = h("div", { class: "modal-body" });
  const closeBtn = h("button", { type: "button", class: "btn btn-ghost modal-close", "aria-label": "Close" }, "\u00d7");
  const dialog = h(
    "dialog",
    { class: wide ? "modal modal-wide" : "modal", id: id || null },
    h("header", { class: "modal-head" }, h("h2", {}, title), closeBtn),
    body,
  );
  const close = () => dialog.close();
  closeBtn.addEventListener("click", close);
  dialog.addEventListener("close", () => dialog.remove());
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog) close(); // a click on the backdrop
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, body, close };
}

/** Ask for confirmation in a modal; resolves true/false. */
export function confirmDialog(title, message, confirmLabel = "Confirm", danger = false) {
  return new Promise((resolve) => {
    const m = modal(title);
    let answered = false;
    const answer = (v) => {
      if (answered) return;
      answered = true;
      resolve(v);
      m.close();
    };
    m.body.append(
      h("p", {}, message),
      h(
        "div",
        { class: "form-actions" },
        h("button", { type: "button", class: "btn", onclick: () => answer(false) }, "Cancel"),
        h("button", { type: "button", class: danger ? "btn btn-danger" : "btn btn-primary", "data-action": "confirm", onclick: () => answer(true) }, confirmLabel),
      ),
    );
    m.dialog.addEventListener("close", () => answer(false));
  });
}
