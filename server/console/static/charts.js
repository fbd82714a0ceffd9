// SVG charts drawn by hand (a few shapes each); no library, nothing fetched.

import { svg } from "./lib.js";

/** Horizontal bars: rows of {label, value, color}; an optional vertical marker line at `marker`. */
export function barChart(container, rows, { min = 0, max, marker, markerLabel, format = (v) => String(v) } = {}) {
  const width = 640, rowH = 26, left = 190, right = 110, top = marker === undefined ? 6 : 22;
  const height = top + rows.length * rowH + 6;
  const hi = max ?? Math.max(1e-9, ...rows.map((r) => r.value));
  const x = (v) => left + ((Math.max(min, v) - min) / (hi - min)) * (width - left - right);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    root.append(svg("text", { x: left - 8, y: y + 17, "text-anchor": "end" }, r.label));
    root.append(svg("rect", { x: left, y: y + 4, width: Math.max(1, x(r.value) - left), height: rowH - 8, rx: 3, fill: r.color || "#2463eb", "data-label": r.label }));
    root.append(svg("text", { x: x(r.value) + 6, y: y + 17 }, r.text ?? format(r.value)));
  });
  if (marker !== undefined) {
    const mx = x(marker);
    root.append(svg("line", { x1: mx, x2: mx, y1: 14, y2: height, stroke: "#c92a2a", "stroke-dasharray": "4 3", "stroke-width": 2, class: "threshold" }));
    root.append(svg("text", { x: mx + 4, y: 12, fill: "#c92a2a" }, markerLabel ?? format(marker)));
  }
  container.replaceChildren(root);
}

export function drawSeries(container, series) {
  const width = 900, height = 170, pad = 30;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const peak = Math.max(1, ...series.map((p) => p.requests));
  const step = (width - 2 * pad) / Math.max(1, series.length);
  const inner = height - 2 * pad;
  root.append(svg("line", { x1: pad, x2: width - pad, y1: height - pad, y2: height - pad, stroke: "#c8cedb" }));
  series.forEach((p, i) => {
    const h = (inner * p.requests) / peak;
    if (h > 0) root.append(svg("rect", { x: pad + i * step + 0.5, y: height - pad - h, width: Math.max(1, step - 1), height: h, fill: "#c9d3e6" }));
    if (p.classified) {
      const y = height - pad - inner * (p.matched / p.classified);
      root.append(svg("circle", { cx: pad + (i + 0.5) * step, cy: y, r: 2.5, fill: "#2463eb" }));
    }
  });
  const points = series.map((p, i) => (p.classified ? `${pad + (i + 0.5) * step},${height - pad - inner * (p.matched / p.classified)}` : null)).filter(Boolean);
  if (points.length > 1) root.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: "#2463eb", "stroke-width": 1.5 }));
  const time = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (series.length) {
    root.append(svg("text", { x: pad, y: height - 10 }, time(series[0].t)));
    root.append(svg("text", { x: width - pad, y: height - 10, "text-anchor": "end" }, "now"));
  }
  root.append(svg("text", { x: pad, y: 16 }, `peak ${peak} requests per ${series.length > 1 ? (series[1].t - series[0].t) / 60 : 1} min; dots: match rate (0–100%)`));
  container.replaceChildren(root);
}
