// taskrouter console: plain ES module, no build step, no network beyond this service.
// Views: #routers (CRUD through the /v2 control plane), #playground, #evaluate, #analyze.

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const ROUTERS = "/v2/gen-ai/models/routers";
const MAX_MODELS = 3;
const SVG = "http://www.w3.org/2000/svg";

const state = { catalog: [], routers: [], editing: null, analyzeTimer: null };

// ---- HTTP: every call carries the admin token when one is set; a 401/403 asks for it ------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders() {
  const token = sessionStorage.getItem("taskrouter-token");
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    // Both API shapes: {"id", "message"} (control plane) and {"error": {"message"}} (OpenAI style).
    const message = data.message || (data.error && data.error.message) || `HTTP ${response.status}`;
    if (response.status === 401 || response.status === 403) askToken(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

function askToken(message) {
  banner(message);
  const dialog = $("#token-dialog");
  if (!dialog.open) dialog.showModal();
}

function banner(text) {
  const el = $("#banner");
  el.textContent = text || "";
  el.hidden = !text;
}

// ---- small helpers -------------------------------------------------------------------------------

const pct = (x) => (x === null || x === undefined ? "n/a" : `${(100 * x).toFixed(1)}%`);
const usd = (x) => (x < 0.01 ? `$${x.toFixed(6)}` : `$${x.toFixed(4)}`);
const ms = (x) => (x === null || x === undefined ? "n/a" : `${x.toFixed(1)} ms`);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Horizontal bars: rows of {label, value, color}; an optional vertical marker line at `marker`. */
function barChart(container, rows, { min = 0, max, marker, markerLabel, format = (v) => String(v) } = {}) {
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

function modelSelect(selected = "", { allowEmpty = true } = {}) {
  const select = el("select");
  if (allowEmpty) select.append(el("option", { value: "" }, "(none)"));
  for (const m of state.catalog) {
    const option = el("option", { value: m.model }, m.model);
    if (m.model === selected) option.selected = true;
    select.append(option);
  }
  return select;
}

function fillRouterSelect(select) {
  const current = select.value;
  select.replaceChildren(...state.routers.map((r) => el("option", { value: r.name }, r.name)));
  if (state.routers.some((r) => r.name === current)) select.value = current;
}

async function loadCatalog() {
  state.catalog = (await api("/console/api/catalog")).models;
}

async function loadRouters() {
  state.routers = (await api(ROUTERS)).model_routers;
}

// ---- Routers view --------------------------------------------------------------------------------

function renderRouterList() {
  const body = $("#router-list tbody");
  body.replaceChildren(
    ...state.routers.map((r) =>
      el("tr", { "data-router": r.name },
        el("td", {}, r.name),
        el("td", {}, r.config.policies.map((p) => p.custom_task.name).join(", ")),
        el("td", {}, r.config.fallback_models.join(", ")),
        el("td", {}, String(r.version)),
        el("td", {}, new Date(r.updated_at).toLocaleString()),
        el("td", {},
          el("button", { type: "button", class: "quiet", onclick: () => openForm(r) }, "Edit"),
          el("button", { type: "button", class: "danger", onclick: () => confirmDelete(r) }, "Delete")),
      ),
    ),
  );
}

function addModelSelects(container, models) {
  container.replaceChildren(...Array.from({ length: MAX_MODELS }, (_, i) => modelSelect(models[i] || "")));
}

function addTask(task = { custom_task: { name: "", description: "", examples: [] }, models: [] }) {
  const node = $("#task-template").content.firstElementChild.cloneNode(true);
  $(".task-name", node).value = task.custom_task.name;
  $(".task-description", node).value = task.custom_task.description;
  $(".task-examples", node).value = (task.custom_task.examples || []).join("\n");
  $(".task-policy", node).value = (task.selection_policy && task.selection_policy.prefer) || "";
  addModelSelects($(".task-models", node), task.models);
  $(".remove-task", node).addEventListener("click", () => { node.remove(); numberTasks(); });
  $("#tasks").append(node);
  numberTasks();
}

function numberTasks() {
  $$("#tasks .task").forEach((node, i) => {
    $(".task-number", node).textContent = String(i + 1);
    // Where the API's messages point: policies[i].custom_task.name, policies[i].models, ...
    const p = `policies[${i}]`;
    $(".task-name", node).dataset.path = `${p}.custom_task.name`;
    $(".task-name-error", node).dataset.errorFor = `${p}.custom_task.name`;
    $(".task-description", node).dataset.path = `${p}.custom_task.description`;
    $(".task-description-error", node).dataset.errorFor = `${p}.custom_task.description`;
    $(".task-examples", node).dataset.path = `${p}.custom_task.examples`;
    $(".task-examples-error", node).dataset.errorFor = `${p}.custom_task.examples`;
    $(".task-models", node).dataset.path = `${p}.models`;
    $(".task-models-error", node).dataset.errorFor = `${p}.models`;
    $(".task-policy", node).dataset.path = `${p}.selection_policy.prefer`;
    $(".task-policy-error", node).dataset.errorFor = `${p}.selection_policy.prefer`;
  });
}

function openForm(router) {
  state.editing = router || null;
  const form = $("#router-form");
  form.reset();
  clearErrors();
  $("#form-title").textContent = router ? `Edit router ${router.name}` : "New router";
  form.elements.name.value = router ? router.name : "";
  form.elements.name.disabled = Boolean(router);
  form.elements.description.value = router ? router.description || "" : "";
  form.elements.threshold.value = router && router.config.threshold !== undefined ? router.config.threshold : "";
  form.elements.max_cost_usd.value = router && router.config.max_cost_usd !== undefined ? router.config.max_cost_usd : "";
  $("#tasks").replaceChildren();
  (router ? router.config.policies : [undefined]).forEach((p) => addTask(p));
  addModelSelects($(".fallback .models"), router ? router.config.fallback_models : []);
  form.hidden = false;
  form.elements.name.focus();
}

function number(value) {
  // Empty = omitted; anything else goes to the API as typed (a number when it is one), so the API's
  // own message explains a bad value.
  if (value.trim() === "") return undefined;
  const n = Number(value);
  return Number.isNaN(n) ? value : n;
}

function collectForm() {
  const form = $("#router-form");
  const models = (container) => $$("select", container).map((s) => s.value).filter(Boolean);
  const definition = {
    name: form.elements.name.value.trim(),
    description: form.elements.description.value.trim(),
    policies: $$("#tasks .task").map((node) => {
      const policy = {
        custom_task: {
          name: $(".task-name", node).value.trim(),
          description: $(".task-description", node).value.trim(),
          examples: $(".task-examples", node).value.split("\n").map((s) => s.trim()).filter(Boolean),
        },
        models: models($(".task-models", node)),
      };
      const prefer = $(".task-policy", node).value;
      if (prefer) policy.selection_policy = { prefer };
      return policy;
    }),
    fallback_models: models($(".fallback .models")),
  };
  for (const key of ["threshold", "max_cost_usd"]) {
    const value = number(form.elements[key].value);
    if (value !== undefined) definition[key] = value;
  }
  return definition;
}

function clearErrors() {
  $$("#router-form .field-error").forEach((p) => (p.textContent = ""));
  $$("#router-form .invalid").forEach((n) => n.classList.remove("invalid"));
  $("#form-status").textContent = "";
}

/** Put the API's message next to the field it names: "router 'x': policies[1].models lists ..." */
function showError(message) {
  const found = /^router '[^']*': (\S+) ([\s\S]*)$/.exec(message);
  let path = found ? found[1] : "definition";
  const problem = found ? `${found[1]} ${found[2]}` : message;
  // examples[3] -> the examples box; the closest field the form has.
  let target = $(`#router-form [data-error-for="${CSS.escape(path)}"]`);
  while (!target && path.includes(".")) {
    path = path.replace(/(\[\d+\])?$/, "").replace(/\.[^.]*$/, "");
    target = $(`#router-form [data-error-for="${CSS.escape(path)}"]`);
  }
  if (!target) {
    path = path.replace(/\[\d+\]$/, "");
    target = $(`#router-form [data-error-for="${CSS.escape(path)}"]`) || $('#router-form [data-error-for="definition"]');
  }
  target.textContent = problem;
  const field = $(`#router-form [data-path="${CSS.escape(target.dataset.errorFor)}"]`);
  if (field) {
    field.classList.add("invalid");
    field.scrollIntoView({ block: "center" });
  }
}

async function saveRouter(event) {
  event.preventDefault();
  clearErrors();
  const definition = collectForm();
  try {
    if (state.editing) await api(`${ROUTERS}/${state.editing.uuid}`, { method: "PUT", body: definition });
    else await api(ROUTERS, { method: "POST", body: definition });
  } catch (error) {
    if (error.status === 400 || error.status === 409) showError(error.message);
    else $("#form-status").textContent = error.message;
    return;
  }
  $("#router-form").hidden = true;
  banner("");
  await refreshRouters();
  $("#form-status").textContent = "";
}

function confirmDelete(router) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = `Delete router ${router.name}? Callers using it get NOT_FOUND from then on.`;
  dialog.onclose = async () => {
    if (dialog.returnValue !== "yes") return;
    await api(`${ROUTERS}/${router.uuid}`, { method: "DELETE" });
    await refreshRouters();
  };
  dialog.showModal();
}

async function refreshRouters() {
  await loadRouters();
  renderRouterList();
  fillRouterSelect($("#pg-router"));
  fillRouterSelect($("#ev-router"));
}

// ---- Playground ----------------------------------------------------------------------------------

function addMessage(role = "user", content = "") {
  const select = el("select", { class: "pg-role" });
  for (const r of ["system", "user", "assistant"]) select.append(el("option", { value: r }, r));
  select.value = role;
  const text = el("textarea", { class: "pg-content", rows: "3", placeholder: "Type or paste a prompt" });
  text.value = content;
  const row = el("div", { class: "message" }, select, text,
    el("button", { type: "button", class: "quiet", title: "Remove", onclick: () => row.remove() }, "×"));
  $("#pg-messages").append(row);
}

function conversation() {
  return $$("#pg-messages .message").map((row) => ({ role: $(".pg-role", row).value, content: $(".pg-content", row).value }));
}

async function classifyPrompt() {
  banner("");
  let result;
  try {
    result = await api("/console/api/route", { method: "POST", body: { router: $("#pg-router").value, messages: conversation() } });
  } catch (error) {
    banner(error.message);
    return;
  }
  $("#pg-result").hidden = false;
  $("#pg-answer").hidden = true;
  const task = $("#pg-task");
  task.textContent = result.task;
  task.className = result.matched ? "matched" : "fallback";
  $("#pg-policy").textContent = result.policy;
  $("#pg-latency").textContent = ms(result.classifier_ms);
  const low = Math.min(0, ...result.scores.map((s) => s.similarity), result.threshold);
  barChart($("#pg-chart"), result.scores.map((s) => ({
    label: s.task,
    value: s.similarity,
    text: `${s.similarity.toFixed(3)} · p=${s.score.toFixed(2)}`,
    color: s.task === result.task ? "#2463eb" : "#a5b4d4",
  })), { min: low, max: 1, marker: result.threshold, markerLabel: `threshold ${result.threshold.toFixed(2)}`, format: (v) => v.toFixed(3) });
  $("#pg-candidates tbody").replaceChildren(...result.candidates.map((c, i) => {
    const latency = c.measured_ttft_ms ?? c.measured_latency_ms;
    return el("tr", {},
      el("td", {}, String(i + 1)), el("td", {}, c.model),
      el("td", { class: "num" }, c.input_price_per_mtok.toFixed(2)), el("td", { class: "num" }, c.output_price_per_mtok.toFixed(2)),
      el("td", { class: "num" }, usd(c.estimated_cost_usd)),
      el("td", { class: "num" }, latency !== null && latency !== undefined ? `${ms(latency)} measured` : c.prior_ms ? `${ms(c.prior_ms)} prior` : "n/a"),
      el("td", {}, c.healthy ? "yes" : "no"));
  }));
  $("#pg-skipped").textContent = result.skipped.length ? `Skipped: ${result.skipped.map((s) => `${s.model} (${s.reason})`).join(", ")}` : "";
  // Sending needs a callable first candidate (one with a pool).
  $("#pg-send").disabled = !result.candidates.some((c) => c.pool);
}

async function sendToModel() {
  const answer = $("#pg-answer-text");
  $("#pg-answer").hidden = false;
  answer.textContent = "";
  $("#pg-attribution").textContent = "streaming…";
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", ...authHeaders() },
    body: JSON.stringify({ model: `router:${$("#pg-router").value}`, messages: conversation(), stream: true }),
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    $("#pg-attribution").textContent = (data.error && data.error.message) || `HTTP ${response.status}`;
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (line.startsWith(": taskrouter ")) {
        const a = JSON.parse(line.slice(13));
        $("#pg-attribution").textContent = `model ${a.model} · task ${a.task} · ${a.prompt_tokens} + ${a.completion_tokens} tokens · ${usd(a.cost_usd)} · ${a.attempts.length} attempt(s)`;
      } else if (line.startsWith("data: ") && line !== "data: [DONE]") {
        const event = JSON.parse(line.slice(6));
        if (event.error) $("#pg-attribution").textContent = event.error.message;
        for (const choice of event.choices || []) answer.textContent += (choice.delta && choice.delta.content) || "";
      }
    }
  }
}

// ---- Evaluate ------------------------------------------------------------------------------------

async function evaluateFile() {
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
  let result;
  try {
    result = await api("/console/api/evaluate", { method: "POST", body: { router: $("#ev-router").value, baseline: $("#ev-baseline").value, rows } });
  } catch (error) {
    status.textContent = error.message;
    return;
  }
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

function drawThreshold(result) {
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
    };
  }
}

// ---- Analyze (live) ------------------------------------------------------------------------------

async function refreshAnalyze() {
  let s;
  try {
    s = await api(`/console/api/analyze?window_s=${$("#an-window").value}`);
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
  $("#an-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  barChart($("#an-tasks"), s.tasks.map((t) => ({ label: `${t.router}/${t.task}`, value: t.count, color: t.task === "fallback" ? "#e8590c" : "#2463eb" })));
  barChart($("#an-models"), s.models.map((m) => ({ label: m.model, value: m.count, color: "#2b8a3e" })));
  drawSeries($("#an-series"), s.series);
}

function drawSeries(container, series) {
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

// ---- navigation and start ------------------------------------------------------------------------

function show(view) {
  for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
  for (const link of $$("nav a")) link.classList.toggle("active", link.dataset.view === view);
  clearInterval(state.analyzeTimer);
  if (view === "analyze") {
    refreshAnalyze();
    state.analyzeTimer = setInterval(refreshAnalyze, 5000);
  }
}

async function start() {
  $("#token-save").addEventListener("click", () => sessionStorage.setItem("taskrouter-token", $("#token-input").value));
  $("#token-dialog").addEventListener("close", () => { if ($("#token-dialog").returnValue === "save") init(); });
  $("#token-button").addEventListener("click", () => $("#token-dialog").showModal());
  $("#new-router").addEventListener("click", () => openForm(null));
  $("#add-task").addEventListener("click", () => { addTask(); numberTasks(); });
  $("#cancel-form").addEventListener("click", () => ($("#router-form").hidden = true));
  $("#router-form").addEventListener("submit", saveRouter);
  $("#pg-add").addEventListener("click", () => addMessage("user"));
  $("#pg-classify").addEventListener("click", classifyPrompt);
  $("#pg-send").addEventListener("click", sendToModel);
  $("#ev-run").addEventListener("click", evaluateFile);
  $("#an-window").addEventListener("change", refreshAnalyze);
  window.addEventListener("hashchange", () => show(location.hash.slice(1) || "routers"));
  addMessage("user");
  show(location.hash.slice(1) || "routers");
  await init();
}

async function init() {
  try {
    await Promise.all([loadCatalog(), loadRouters()]);
  } catch {
    return; // api() has shown why (and asked for a token on 401)
  }
  banner("");
  renderRouterList();
  fillRouterSelect($("#pg-router"));
  fillRouterSelect($("#ev-router"));
  const baseline = $("#ev-baseline");
  baseline.replaceChildren(...modelSelect("", { allowEmpty: false }).children);
  const priciest = [...state.catalog].sort((a, b) => b.output_price_per_mtok - a.output_price_per_mtok)[0];
  if (priciest) baseline.value = priciest.model;
  document.body.dataset.ready = "true"; // for tests: data is loaded
}

start();
