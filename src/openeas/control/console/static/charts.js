// Small hand-written SVG line charts for the service's Monitoring tab (no library, no CDN).
// A chart is a <figure> built once; `draw` replaces its SVG content with the new points.
// The figure keeps what it drew in data attributes (data-points, data-max, data-last-<key>,
// data-total-<key>), so scripts and tests can read the numbers behind the lines.

import { clear, h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const H = 200;
const PAD = { left: 52, right: 12, top: 12, bottom: 26 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** 1, 2, 2.5, 5 x 10^n: the smallest "nice" number >= v (the top of the y axis). */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function fmtNum(v) {
  if (v === null || v === undefined) return "-";
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/**
 * A chart: `series` [{key, label, cls}] (cls: the CSS class of its line and legend swatch).
 * Returns {el, draw(points, tMin, tMax)}; a point is {t, [key]: value or null (a gap)}.
 */
export function lineChart({ id, title, unit, series }) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": title });
  const legend = h("div", { class: "chart-legend" });
  const el = h("figure", { class: "chart card", id }, h("figcaption", { class: "chart-title" }, title, h("span", { class: "muted small" }, ` (${unit})`)), svg, legend);

  const draw = (points, tMin, tMax, totals = {}) => {
    clear(svg);
    const x0 = PAD.left, x1 = W - PAD.right, y0 = H - PAD.bottom, y1 = PAD.top;
    let max = 0;
    for (const p of points) for (const ser of series) if (p[ser.key] !== null && p[ser.key] !== undefined) max = Math.max(max, p[ser.key]);
    const top = niceMax(max);
    const span = Math.max(tMax - tMin, 1);
    const X = (t) => x0 + ((t - tMin) / span) * (x1 - x0);
    const Y = (v) => y0 - (v / top) * (y0 - y1);
    // grid and y labels
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      const y = Y(v);
      svg.append(s("line", { x1: x0, x2: x1, y1: y, y2: y, class: i === 0 ? "chart-axis" : "chart-grid" }));
      svg.append(s("text", { x: x0 - 6, y: y + 4, "text-anchor": "end", class: "chart-label" }, fmtNum(v)));
    }
    // x labels: minutes before now
    for (const f of [0, 0.5, 1]) {
      const ago = Math.round(((1 - f) * span) / 60 * 10) / 10;
      svg.append(s("text", { x: x0 + f * (x1 - x0), y: H - 6, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle", class: "chart-label" }, ago ? `-${ago} min` : "now"));
    }
    // one polyline per run of values (null breaks the line)
    for (const ser of series) {
      let run = [];
      const flush = () => {
        if (run.length === 1) svg.append(s("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, class: `chart-dot ${ser.cls}` }));
        else if (run.length > 1) svg.append(s("polyline", { points: run.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), class: `chart-line ${ser.cls}` }));
        run = [];
      };
      for (const p of points) {
        const v = p[ser.key];
        if (v === null || v === undefined) flush();
        else run.push([X(p.t), Y(v)]);
      }
      flush();
    }
    if (!points.length) svg.append(s("text", { x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle", class: "chart-empty" }, "No requests seen yet"));
    // legend: last value (and the window's total where given)
    clear(legend);
    el.dataset.points = String(points.length);
    el.dataset.window = String(Math.round(tMax - tMin));
    el.dataset.max = String(max);
    for (const ser of series) {
      const last = [...points].reverse().find((p) => p[ser.key] !== null && p[ser.key] !== undefined);
      const lastV = last ? last[ser.key] : null;
      el.dataset[`last${ser.key[0].toUpperCase()}${ser.key.slice(1)}`] = lastV === null ? "" : String(lastV);
      const total = totals[ser.key];
      if (total !== undefined) el.dataset[`total${ser.key[0].toUpperCase()}${ser.key.slice(1)}`] = String(total);
      legend.append(h("span", { class: "chart-key", "data-key": ser.key },
        h("span", { class: `chart-swatch ${ser.cls}` }), `${ser.label} `,
        h("strong", {}, fmtNum(lastV)),
        total !== undefined ? h("span", { class: "muted" }, ` (${total} in window)`) : null));
    }
  };
  return { el, draw };
}
