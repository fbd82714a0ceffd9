// The Routers view: list, create and edit in a form (errors from the API shown by the field they
// name), delete after a confirmation. Everything goes through the /v2 control plane.

import { $, $$, MAX_MODELS, ROUTERS, api, banner, el, fillRouterSelect, loadRouters, modelSelect, state } from "./lib.js";

export function renderRouterList() {
  const body = $("#router-list tbody");
  body.replaceChildren(
    ...state.routers.map((r) =>
      el("tr", { "data-router": r.name },
        el("td", {}, r.name),
        el("td", {}, r.config.policies.map((p) => p.custom_task.name).join(", ")),
        el("td", {}, r.config.fallback_models.join(", ")),
        el("td", { class: "no-match" }, noMatchText(r.no_match)),
        el("td", {}, String(r.version)),
        el("td", {}, new Date(r.updated_at).toLocaleString()),
        el("td", {},
          el("button", { type: "button", class: "quiet", onclick: () => openForm(r) }, "Edit"),
          el("button", { type: "button", class: "danger", onclick: () => confirmDelete(r) }, "Delete")),
      ),
    ),
  );
}

/** "calibrated >= 0.90 (fitted; expected fallback P 0.95 / R 0.90), latest_turn" */
export function noMatchText(nm) {
  if (!nm) return "";
  const pr = nm.expected_fallback_precision === null || nm.expected_fallback_precision === undefined
    ? "" : `; expected fallback P ${nm.expected_fallback_precision.toFixed(2)} / R ${nm.expected_fallback_recall.toFixed(2)}`;
  return `${nm.criterion} >= ${nm.threshold.toFixed(2)} (${nm.threshold_source}${pr}), ${nm.context}`;
}

export function addModelSelects(container, models) {
  container.replaceChildren(...Array.from({ length: MAX_MODELS }, (_, i) => modelSelect(models[i] || "")));
}

export function addTask(task = { custom_task: { name: "", description: "", examples: [] }, models: [] }) {
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

export function numberTasks() {
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

export function openForm(router) {
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
  form.elements.context.value = (router && router.config.context) || "";
  // The criterion in force, not only the one the definition names: a threshold typed here is then
  // read in the units the router already uses (a threshold sent without a criterion is a cosine).
  form.elements.criterion.value = (router && (router.config.criterion || router.no_match.criterion)) || "";
  form.elements.fallback_examples.value = ((router && router.config.fallback_examples) || []).join("\n");
  $("#form-no-match").textContent = router ? `Now: ${noMatchText(router.no_match)}` : "";
  $("#tasks").replaceChildren();
  (router ? router.config.policies : [undefined]).forEach((p) => addTask(p));
  addModelSelects($(".fallback .models"), router ? router.config.fallback_models : []);
  form.hidden = false;
  form.elements.name.focus();
}

export function number(value) {
  // Empty = omitted; anything else goes to the API as typed (a number when it is one), so the API's
  // own message explains a bad value.
  if (value.trim() === "") return undefined;
  const n = Number(value);
  return Number.isNaN(n) ? value : n;
}

export function collectForm() {
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
  for (const key of ["context", "criterion"]) {
    if (form.elements[key].value) definition[key] = form.elements[key].value;
  }
  const fallbackExamples = form.elements.fallback_examples.value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (fallbackExamples.length) definition.fallback_examples = fallbackExamples;
  for (const key of ["threshold", "max_cost_usd"]) {
    const value = number(form.elements[key].value);
    if (value !== undefined) definition[key] = value;
  }
  return definition;
}

export function clearErrors() {
  $$("#router-form .field-error").forEach((p) => (p.textContent = ""));
  $$("#router-form .invalid").forEach((n) => n.classList.remove("invalid"));
  $("#form-status").textContent = "";
}

/** Put the API's message next to the field it names: "router 'x': policies[1].models lists ..." */
export function showError(message) {
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

export async function saveRouter(event) {
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

export function confirmDelete(router) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = `Delete router ${router.name}? Callers using it get NOT_FOUND from then on.`;
  dialog.onclose = async () => {
    if (dialog.returnValue !== "yes") return;
    await api(`${ROUTERS}/${router.uuid}`, { method: "DELETE" });
    await refreshRouters();
  };
  dialog.showModal();
}

export async function refreshRouters() {
  await loadRouters();
  renderRouterList();
  fillRouterSelect($("#pg-router"));
  fillRouterSelect($("#ev-router"));
}
