// The Playground view: classify a conversation against a router, draw the scores and candidates, and
// stream the answer of the model the policy picks.

import { barChart } from "./charts.js";
import { $, $$, api, authHeaders, banner, el, ms, usd } from "./lib.js";

export function addMessage(role = "user", content = "") {
  const select = el("select", { class: "pg-role" });
  for (const r of ["system", "user", "assistant"]) select.append(el("option", { value: r }, r));
  select.value = role;
  const text = el("textarea", { class: "pg-content", rows: "3", placeholder: "Type or paste a prompt" });
  text.value = content;
  const row = el("div", { class: "message" }, select, text,
    el("button", { type: "button", class: "quiet", title: "Remove", onclick: () => row.remove() }, "×"));
  $("#pg-messages").append(row);
}

export function conversation() {
  return $$("#pg-messages .message").map((row) => ({ role: $(".pg-role", row).value, content: $(".pg-content", row).value }));
}

export async function classifyPrompt() {
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
  // The threshold is in the criterion's units; the line sits where it falls in similarity units.
  const cut = result.threshold_similarity;
  const low = Math.min(0, ...result.scores.map((s) => s.similarity), cut);
  barChart($("#pg-chart"), result.scores.map((s) => ({
    label: s.task,
    value: s.similarity,
    text: `${s.similarity.toFixed(3)} · p=${s.score.toFixed(2)}`,
    color: s.task === result.task ? "#2463eb" : "#a5b4d4",
  })), { min: low, max: Math.max(1, cut), marker: cut, markerLabel: `threshold ${result.threshold.toFixed(2)} ${result.criterion} · this prompt ${result.criterion_value.toFixed(2)}`, format: (v) => v.toFixed(3) });
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

export async function sendToModel() {
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
