// taskrouter console: plain ES modules, no build step, no network beyond this service.
// Views: #routers (CRUD through the /v2 control plane), #playground, #evaluate, #analyze.

import { refreshAnalyze } from "./analyze.js";
import { evaluateFile } from "./evaluate.js";
import { $, $$, el, fillRouterSelect, loadCatalog, loadRouters, modelSelect, state, banner } from "./lib.js";
import { addMessage, classifyPrompt, sendToModel } from "./playground.js";
import { addTask, numberTasks, openForm, renderRouterList, saveRouter } from "./routers.js";

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
  $("#an-router").addEventListener("change", refreshAnalyze);
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
  const analyzed = $("#an-router");
  analyzed.replaceChildren(el("option", { value: "" }, "all routers"), ...state.routers.map((r) => el("option", { value: r.name }, r.name)));
  const baseline = $("#ev-baseline");
  baseline.replaceChildren(...modelSelect("", { allowEmpty: false }).children);
  const priciest = [...state.catalog].sort((a, b) => b.output_price_per_mtok - a.output_price_per_mtok)[0];
  if (priciest) baseline.value = priciest.model;
  document.body.dataset.ready = "true"; // for tests: data is loaded
}

start();
