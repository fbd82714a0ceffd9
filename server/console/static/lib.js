// Shared by the console's views: DOM helpers, the HTTP client (admin token, error shapes), formatting,
// the page's state, and the catalogue and router lists every view picks from.

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
export const ROUTERS = "/v2/gen-ai/models/routers";
export const MAX_MODELS = 3;
export const SVG = "http://www.w3.org/2000/svg";

export const state = { catalog: [], routers: [], editing: null, analyzeTimer: null };

// ---- HTTP: every call carries the admin token when one is set; a 401/403 asks for it ------------

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function authHeaders() {
  const token = sessionStorage.getItem("taskrouter-token");
  return token ? { authorization: `Bearer ${token}` } : {};
}

export async function api(path, { method = "GET", body } = {}) {
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

export function askToken(message) {
  banner(message);
  const dialog = $("#token-dialog");
  if (!dialog.open) dialog.showModal();
}

export function banner(text) {
  const el = $("#banner");
  el.textContent = text || "";
  el.hidden = !text;
}

// ---- small helpers -------------------------------------------------------------------------------

export const pct = (x) => (x === null || x === undefined ? "n/a" : `${(100 * x).toFixed(1)}%`);
export const usd = (x) => (x < 0.01 ? `$${x.toFixed(6)}` : `$${x.toFixed(4)}`);
export const ms = (x) => (x === null || x === undefined ? "n/a" : `${x.toFixed(1)} ms`);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

export function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function modelSelect(selected = "", { allowEmpty = true } = {}) {
  const select = el("select");
  if (allowEmpty) select.append(el("option", { value: "" }, "(none)"));
  for (const m of state.catalog) {
    const option = el("option", { value: m.model }, m.model);
    if (m.model === selected) option.selected = true;
    select.append(option);
  }
  return select;
}

export function fillRouterSelect(select) {
  const current = select.value;
  select.replaceChildren(...state.routers.map((r) => el("option", { value: r.name }, r.name)));
  if (state.routers.some((r) => r.name === current)) select.value = current;
}

export async function loadCatalog() {
  state.catalog = (await api("/console/api/catalog")).models;
}

export async function loadRouters() {
  state.routers = (await api(ROUTERS)).model_routers;
}
