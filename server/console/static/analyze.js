// The Analyze view: recent traffic from the service's own per-minute counts, refreshed live.

import { barChart, drawSeries } from "./charts.js";
import { $, api, banner, pct, usd } from "./lib.js";

export async function refreshAnalyze() {
  let s;
  try {
    const router = $("#an-router").value;
    s = await api(`/console/api/analyze?window_s=${$("#an-window").value}${router ? `&router=${encodeURIComponent(router)}` : ""}`);
  } catch (error) {
    banner(error.message);
    return;
  }
  $("#an-requests").textContent = String(s.requests);
  $("#an-match").textContent = pct(s.match_rate);
  $("#an-fallback").textContent = pct(s.fallback_rate);
  $("#an-latency").textContent = s.latency_ms.p50 === null ? "n/a" : `${s.latency_ms.p50.toFixed(1)} / ${s.latency_ms.p99.toFixed(1)} ms`;
  $("#an-cost").textContent = usd(s.cost_usd);
  $("#an-errors").textContent = String(s.errors) + (s.since_start.stalled ? " · classifier STALLED" : "");
  $("#an-updated").textContent = `updated ${new Date().toLocaleTimeString()}` + (s.workers > 1 ? `, ${s.workers} workers` : "");
  barChart($("#an-tasks"), s.tasks.map((t) => ({ label: `${t.router}/${t.task}`, value: t.count, color: t.task === "fallback" ? "#e8590c" : "#2463eb" })));
  barChart($("#an-models"), [
    ...s.models.map((m) => ({ label: m.model, value: m.count, color: "#2b8a3e" })),
    ...s.planned_models.map((m) => ({ label: `${m.model} (planned)`, value: m.count, color: "#adb5bd" })),
  ]);
  drawSeries($("#an-series"), s.series);
}
