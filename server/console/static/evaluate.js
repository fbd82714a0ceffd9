// The Evaluate view: a labelled JSONL file scored against a router, with the threshold it would need.

import { $, api, el, pct, svg, usd, state } from "./lib.js";
import { openForm } from "./routers.js";

export async function evaluateFile() {
  const status = $("#ev-status");
  const file = $("#ev-file").files[0];
  if (!file) { status.textContent = "Choose a JSONL file first."; return; }
  const rows = [];
  const lines = (await file.text()).split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    try { rows.push(JSON.parse(lines[i])); } catch { status.textContent = `line ${i + 1} is not JSON`; return; }
  }
  status.textContent = `classifying ${rows.length} prompts…`;
  const progress = $("#ev-progress"), cancel = $("#ev-cancel");
  let job;
  try {
    // A job: the server answers at once, classifies behind live traffic, and reports its progress.
    job = await api("/console/api/evaluate/jobs", { method: "POST", body: { router: $("#ev-router").value, baseline: $("#ev-baseline").value, rows } });
  } catch (error) {
    status.textContent = error.message;
    return;
  }
  progress.hidden = cancel.hidden = false;
  cancel.onclick = () => api(`/console/api/evaluate/jobs/${job.id}`, { method: "DELETE" }).catch(() => {});
  try {
    while (job.state === "running") {
      progress.max = job.total;
      progress.value = job.done;
      status.textContent = `classified ${job.done} of ${job.total}…`;
      await new Promise((resolve) => setTimeout(resolve, 300));
      job = await api(`/console/api/evaluate/jobs/${job.id}`);
    }
  } catch (error) {
    job = { state: "failed", error: error.message };
  } finally {
    progress.hidden = cancel.hidden = true;
  }
  if (job.state !== "done") {
    status.textContent = job.state === "cancelled" ? "Cancelled." : `Failed: ${job.error}`;
    return;
  }
  const result = job.result;
  status.textContent = "";
  $("#ev-result").hidden = false;
  $("#ev-rows").textContent = String(result.rows);
  $("#ev-accuracy").textContent = pct(result.accuracy);
  $("#ev-precision").textContent = pct(result.fallback_precision);
  $("#ev-recall").textContent = pct(result.fallback_recall);
  $("#ev-routed").textContent = usd(result.cost.routed_usd);
  $("#ev-base").textContent = `${usd(result.cost.baseline_usd)}${result.cost.saving !== null ? ` (routing saves ${pct(result.cost.saving)})` : ""}`;
  $("#ev-baseline-tile").firstChild.textContent = `All to ${result.cost.baseline_model}`;
  $("#ev-unknown").textContent = result.unknown_labels.length ? `Labels the router has no task for (always counted wrong): ${result.unknown_labels.join(", ")}` : "";
  $("#ev-cost").replaceChildren(
    el("tr", {}, ...["task", "prompts", "routed to", "output tokens", "routed", `all to ${result.cost.baseline_model}`, "saving"].map((h) => el("th", {}, h))),
    ...result.cost_by_task.map((row) => {
      const out = result.output_tokens[row.task];
      return el("tr", {}, el("td", {}, row.task), el("td", {}, String(row.requests)), el("td", {}, row.models.join(", ")),
        el("td", {}, `${Math.round(out.tokens)} (${out.source})`), el("td", {}, usd(row.routed_usd)), el("td", {}, usd(row.baseline_usd)),
        el("td", {}, row.saving === null ? "-" : pct(row.saving)));
    }),
  );
  drawThreshold(result);
  const table = $("#ev-confusion");
  const peak = Math.max(1, ...result.confusion.flat());
  table.replaceChildren(
    el("tr", {}, el("th", {}, "label \\ predicted"), ...result.predicted_labels.map((p) => el("th", {}, p))),
    ...result.confusion.map((row, i) =>
      el("tr", {}, el("th", {}, result.labels[i]), ...row.map((n, j) => {
        const cell = el("td", { class: result.labels[i] === result.predicted_labels[j] ? "diag" : "" }, String(n));
        if (n) cell.style.background = `rgba(36, 99, 235, ${0.08 + 0.5 * (n / peak)})`;
        return cell;
      }))),
  );
}

export function drawThreshold(result) {
  const sweep = result.threshold;
  const button = $("#ev-use-threshold");
  button.hidden = true;
  if (!sweep) return;
  const now = sweep.points.find((p) => p.threshold === Math.round(sweep.current * 1e4) / 1e4) || { accuracy: result.accuracy };
  const best = sweep.best;
  $("#ev-threshold-text").textContent = best.threshold === now.threshold
    ? `The router's threshold ${sweep.current.toFixed(2)} is the best of those tried (accuracy ${pct(now.accuracy)}).`
    : `The router's threshold ${sweep.current.toFixed(2)} gives accuracy ${pct(now.accuracy)}; ${best.threshold.toFixed(2)} would give ${pct(best.accuracy)} on this file.`;
  const width = 640, height = 180, pad = 34;
  const ts = sweep.points.map((p) => p.threshold);
  const lo = Math.min(...ts), hi = Math.max(...ts);
  const x = (t) => pad + ((t - lo) / (hi - lo || 1)) * (width - 2 * pad);
  const y = (a) => height - pad - a * (height - 2 * pad);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  root.append(svg("line", { x1: pad, x2: width - pad, y1: y(0), y2: y(0), stroke: "#c8cedb" }));
  root.append(svg("polyline", { points: sweep.points.map((p) => `${x(p.threshold)},${y(p.accuracy)}`).join(" "), fill: "none", stroke: "#2463eb", "stroke-width": 2 }));
  root.append(svg("circle", { cx: x(sweep.current), cy: y(now.accuracy), r: 5, fill: "#c92a2a", class: "current" }));
  root.append(svg("circle", { cx: x(best.threshold), cy: y(best.accuracy), r: 5, fill: "#2b8a3e", class: "best" }));
  root.append(svg("text", { x: pad, y: height - 10 }, lo.toFixed(2)));
  root.append(svg("text", { x: width - pad, y: height - 10, "text-anchor": "end" }, hi.toFixed(2)));
  root.append(svg("text", { x: pad, y: 14 }, "accuracy (0–100%) by threshold; red: now, green: best"));
  $("#ev-threshold-chart").replaceChildren(root);
  if (best.threshold !== now.threshold) {
    button.hidden = false;
    button.textContent = `Edit ${result.router} with threshold ${best.threshold.toFixed(2)}`;
    button.onclick = () => {
      const router = state.routers.find((r) => r.name === result.router);
      if (!router) return;
      location.hash = "routers";
      openForm(router);
      $("#router-form").elements.threshold.value = String(best.threshold);
      // A threshold is read in its criterion's units: keep the one the sweep was made in.
      $("#router-form").elements.criterion.value = sweep.criterion;
    };
  }
}
