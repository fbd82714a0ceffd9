"""The console in a real browser: headless Debian chromium driven by Playwright, against the real
service on loopback (forwarding to a real OpenAI-protocol server). Each test leaves a screenshot in
artifacts/console/ (not committed) for a person to look at."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskrouter.v1 import taskrouter_pb2 as pb
from tests.conftest import ROOT, ServerThread, demo_service
from tests.fake_openai import MATH, OFF_TOPIC, POEM, FakeOpenAI

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/setup_test_services.sh)"
)
sync_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = ROOT / "artifacts" / "console"
# What the probe found chromium needs here: no sandbox as root, no GPU, no calls home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def service(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    thread = demo_service(
        fake,
        tmp_path_factory.mktemp("console"),
        targets={"health_interval_s": 3600},
        batching={"max_queue_ms": 0},
    )
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: object, service: ServerThread) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})  # a laptop screen
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"http://127.0.0.1:{service.http_port}/console/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_routers_form_creates_a_router_and_shows_validation_errors_by_the_field(page: object) -> None:
    page.click("a[data-view=routers]")
    assert page.locator("#router-list tr[data-router=demo]").is_visible()
    page.click("#new-router")
    page.fill("input[name=name]", "helpdesk")
    page.fill("input[name=description]", "IT helpdesk")
    first = page.locator("#tasks .task").nth(0)
    first.locator(".task-name").fill("triage")
    first.locator(".task-description").fill("Sort an IT ticket into a category; answer with the label only.")
    first.locator(".task-models select").nth(0).select_option("cheap")
    first.locator(".task-policy").select_option("cheapest")
    page.click("#add-task")
    second = page.locator("#tasks .task").nth(1)
    second.locator(".task-name").fill("triage")  # a duplicate: the API refuses it
    second.locator(".task-description").fill("Fix a laptop that will not connect to the VPN, step by step.")
    second.locator(".task-models select").nth(0).select_option("strong")
    page.locator(".fallback .models select").nth(0).select_option("spare")
    page.click("#router-form button[type=submit]")
    error = second.locator(".task-name-error")
    error.wait_for()
    assert "duplicates task name 'triage'" in error.inner_text()  # the API's words, by the field
    assert "invalid" in second.locator(".task-name").get_attribute("class")
    shot(page, "routers-validation-error")

    second.locator(".task-name").fill("troubleshoot")
    page.click("#router-form button[type=submit]")
    page.locator("#router-list tr[data-router=helpdesk]").wait_for()
    assert page.locator("#router-form").is_hidden()
    row = page.locator("#router-list tr[data-router=helpdesk]").inner_text()
    assert "triage, troubleshoot" in row and "spare" in row
    assert "calibrated >=" in row and "latest_turn" in row  # the no-match decision in force
    shot(page, "routers-created")

    # Edit: a new version, the name kept; then delete, after a confirmation.
    page.locator("#router-list tr[data-router=helpdesk] button", has_text="Edit").click()
    assert page.locator("input[name=name]").is_disabled()
    # The form names the criterion in force, so a threshold typed is read in its units.
    assert page.locator("select[name=criterion]").input_value() == "calibrated"
    page.fill("input[name=threshold]", "30")  # out of range: the API's message, by the field
    page.click("#router-form button[type=submit]")
    page.locator("[data-error-for=threshold]").wait_for()
    assert "use a number in [-10, 20] (criterion 'calibrated')" in page.inner_text(
        "[data-error-for=threshold]"
    )
    page.select_option("select[name=criterion]", "")  # no criterion: a threshold is a cosine, as before
    page.fill("input[name=threshold]", "0.3")
    page.click("#router-form button[type=submit]")
    page.wait_for_function(
        "document.querySelector('#router-list tr[data-router=helpdesk] td:nth-child(5)').textContent === '2'"
    )
    # A threshold without a criterion is read in similarity units, and the list says so.
    row = page.locator("#router-list tr[data-router=helpdesk]").inner_text()
    assert "similarity >= 0.30 (router)" in row
    # Fallback examples and no threshold: fitted when the router loads, with what the fit expects.
    page.locator("#router-list tr[data-router=helpdesk] button", has_text="Edit").click()
    page.fill("input[name=threshold]", "")
    page.select_option("select[name=criterion]", "calibrated")
    page.fill(
        "textarea[name=fallback_examples]",
        "What is the capital of Peru?\nWrite me a limerick about cats\nbook a table for two tonight",
    )
    page.click("#router-form button[type=submit]")
    page.wait_for_function(
        "document.querySelector('#router-list tr[data-router=helpdesk] td:nth-child(5)').textContent === '3'"
    )
    row = page.locator("#router-list tr[data-router=helpdesk]").inner_text()
    assert "calibrated >=" in row and "(fitted; expected fallback P" in row
    page.locator("#router-list tr[data-router=helpdesk] button", has_text="Delete").click()
    assert "Delete router helpdesk?" in page.locator("#confirm-text").inner_text()
    page.click("#confirm-yes")
    page.locator("#router-list tr[data-router=helpdesk]").wait_for(state="detached")


def test_playground_shows_task_score_chart_candidates_and_a_streamed_answer(page: object) -> None:
    page.click("a[data-view=playground]")
    page.select_option("#pg-router", "demo")
    page.fill("#pg-messages .pg-content", MATH)
    page.click("#pg-classify")
    page.locator("#pg-result").wait_for()
    assert page.inner_text("#pg-task") == "math"
    assert page.locator("#pg-chart svg rect").count() == 2  # one bar per task
    assert page.locator("#pg-chart svg line.threshold").count() == 1
    assert "threshold 0.20" in page.inner_text("#pg-chart")
    assert "ms" in page.inner_text("#pg-latency")
    candidates = page.locator("#pg-candidates tbody tr")
    assert candidates.nth(0).inner_text().split("\t")[1] == "cheap"  # prefer cheapest: cheap first
    assert "$" in candidates.nth(0).inner_text()
    page.click("#pg-send")
    page.wait_for_function("document.querySelector('#pg-attribution').textContent.includes('tokens')")
    assert page.inner_text("#pg-answer-text") == "Hello from the fake model."
    assert "model cheap" in page.inner_text("#pg-attribution")
    shot(page, "playground")

    page.fill("#pg-messages .pg-content", OFF_TOPIC)
    page.click("#pg-classify")
    page.wait_for_function("document.querySelector('#pg-task').textContent === 'fallback'")
    assert page.inner_text("#pg-policy") == "fallback"


def test_evaluate_uploads_a_labelled_file_and_shows_accuracy_and_confusion(
    page: object, tmp_path: Path
) -> None:
    rows = [
        {"text": MATH, "label": "math"},
        {"text": "Compute the integral of x squared from 0 to 3.", "label": "math"},
        {"text": POEM, "label": "poem"},
        {"text": "Write a haiku about a quiet mountain lake.", "label": "poem"},
        {"text": OFF_TOPIC, "label": "fallback"},
    ]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    page.click("a[data-view=evaluate]")
    page.select_option("#ev-router", "demo")
    page.select_option("#ev-baseline", "strong")
    page.set_input_files("#ev-file", str(labelled))
    page.click("#ev-run")
    page.locator("#ev-result").wait_for()
    assert page.inner_text("#ev-rows") == "5"
    accuracy = float(page.inner_text("#ev-accuracy").rstrip("%"))
    assert accuracy >= 80.0
    matrix = page.locator("#ev-confusion tr")
    assert matrix.count() == 4  # header + math, poem, fallback
    diagonal = sum(int(c) for c in page.locator("#ev-confusion td.diag").all_inner_texts())
    assert diagonal == round(accuracy * 5 / 100)
    assert "routing saves" in page.inner_text("#ev-base")
    cost_rows, cost_text = page.locator("#ev-cost tr"), page.inner_text("#ev-cost")
    assert cost_rows.count() >= 3 and ("(default)" in cost_text or "(measured)" in cost_text)
    assert "The router's threshold 0.20" in page.inner_text("#ev-threshold-text")
    assert page.locator("#ev-threshold-chart svg circle.current").count() == 1
    shot(page, "evaluate")


def test_evaluate_prices_answers_at_the_output_tokens_stated_per_task(service: ServerThread) -> None:
    base = f"http://127.0.0.1:{service.http_port}/console/api/evaluate"
    rows = [{"text": MATH, "label": "math"}, {"text": POEM, "label": "poem"}]

    def evaluate(output_tokens: dict[str, int]) -> dict:
        body = {"router": "demo", "baseline": "strong", "rows": rows, "output_tokens": output_tokens}
        answer = httpx.post(base, json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()

    short, long = evaluate({"math": 10}), evaluate({"math": 10_000})
    assert short["output_tokens"]["math"] == {"tokens": 10, "source": "stated"}
    assert short["output_tokens"]["poem"]["source"] in ("measured", "default")
    by_task = {r["task"]: r for r in short["cost_by_task"]}
    longer = {r["task"]: r for r in long["cost_by_task"]}
    assert longer["math"]["routed_usd"] > by_task["math"]["routed_usd"]  # stated tokens priced
    assert longer["poem"]["routed_usd"] == by_task["poem"]["routed_usd"]  # other tasks untouched
    # one cost model: the per-task rows add up to the totals
    assert abs(sum(r["routed_usd"] for r in short["cost_by_task"]) - short["cost"]["routed_usd"]) < 1e-12
    assert abs(sum(r["baseline_usd"] for r in short["cost_by_task"]) - short["cost"]["baseline_usd"]) < 1e-12
    for bad, phrase in (({"nope": 5}, "output_tokens names 'nope'"), ({"math": -1}, "whole numbers")):
        answer = httpx.post(
            base, json={"router": "demo", "baseline": "strong", "rows": rows, "output_tokens": bad}
        )
        assert answer.status_code == 400 and phrase in answer.json()["message"], answer.text


def test_evaluate_runs_as_a_job_with_progress_and_can_be_cancelled(service: ServerThread) -> None:
    base = f"http://127.0.0.1:{service.http_port}/console/api/evaluate"
    prompts = [MATH, POEM, OFF_TOPIC]
    rows = [
        {"text": f"{prompts[i % 3]} ({i})", "label": ["math", "poem", "fallback"][i % 3]} for i in range(1500)
    ]
    body = {"router": "demo", "baseline": "strong", "rows": rows}
    job = httpx.post(base + "/jobs", json=body, timeout=30).json()
    assert job["state"] == "running" and job["total"] == 1500 and job["result"] is None
    seen = []
    while job["state"] == "running":
        seen.append(job["done"])
        time.sleep(0.05)
        job = httpx.get(f"{base}/jobs/{job['id']}", timeout=30).json()
    assert job["state"] == "done" and job["done"] == 1500, job
    assert any(0 < d < 1500 for d in seen), seen  # progress moved through the admission-sized slices
    assert job["result"]["rows"] == 1500 and job["result"]["accuracy"] is not None

    cancelled = httpx.post(base + "/jobs", json=body, timeout=30).json()
    answer = httpx.delete(f"{base}/jobs/{cancelled['id']}", timeout=30).json()
    assert answer["state"] == "cancelled"
    assert httpx.get(f"{base}/jobs/{cancelled['id']}", timeout=30).json()["state"] == "cancelled"
    # nothing is left behind: the service classifies as before
    assert service.stub.Classify(pb.ClassifyRequest(router="demo", prompt=MATH)).task == "math"
    missing = httpx.get(f"{base}/jobs/nope", timeout=30)
    assert missing.status_code == 404 and "no evaluation job 'nope'" in missing.json()["message"]
    refused = httpx.post(base + "/jobs", json={**body, "rows": []}, timeout=30)  # refused at once, no job
    assert refused.status_code == 400 and "non-empty list" in refused.json()["message"]


def test_console_api_refuses_bad_input_with_the_reason(service: ServerThread) -> None:
    base = f"http://127.0.0.1:{service.http_port}/console/api"
    cases = [
        (
            "/evaluate",
            {"router": "demo", "baseline": "nope", "rows": [{"text": "a", "label": "math"}]},
            "known:",
        ),
        ("/evaluate", {"router": "demo", "baseline": "strong", "rows": []}, "non-empty list"),
        (
            "/evaluate",
            {"router": "demo", "baseline": "strong", "rows": [{"text": " ", "label": "x"}]},
            "rows[0]",
        ),
        ("/evaluate", {"router": "zzz", "baseline": "strong", "rows": [{"text": "a", "label": "x"}]}, "zzz"),
        ("/route", {"router": "demo", "messages": []}, "messages must be a non-empty list"),
        (
            "/route",
            {"router": "demo", "messages": [{"role": "bot", "content": "hi"}]},
            "'bot' is not allowed",
        ),
    ]
    for path, body, phrase in cases:
        answer = httpx.post(base + path, json=body, timeout=30)
        assert answer.status_code in (400, 404), (path, body, answer.text)
        assert phrase in answer.json()["message"], answer.text
    too_many = {"router": "demo", "baseline": "strong", "rows": [{"text": "a", "label": "math"}] * 5001}
    assert "at most 5000" in httpx.post(base + "/evaluate", json=too_many, timeout=30).json()["message"]
    assert httpx.get(base + "/analyze?window_s=0").status_code == 400
    json_type = {"content-type": "application/json"}
    assert httpx.post(base + "/route", content=b"{", headers=json_type, timeout=30).status_code == 400


def number_of(text: str) -> int:
    return int(text.strip() or 0)


def test_analyze_shows_recent_traffic(page: object, service: ServerThread) -> None:
    for prompt in (MATH, POEM, OFF_TOPIC):
        service.stub.Classify(pb.ClassifyRequest(router="demo", prompt=prompt))
    page.click("a[data-view=analyze]")
    page.wait_for_function("Number(document.querySelector('#an-requests').textContent) >= 3")
    assert page.inner_text("#an-match") != "n/a"
    tasks = page.inner_text("#an-tasks")
    assert "demo/math" in tasks and "demo/poem" in tasks
    assert page.locator("#an-series svg rect").count() >= 1
    # The Playground's classifications chose models without calling them: shown apart, in grey.
    assert "(planned)" in page.inner_text("#an-models")
    page.select_option("#an-router", "demo")  # the filter narrows every panel, not only the tasks
    page.wait_for_function("document.querySelector('#an-updated').textContent.includes('updated')")
    assert number_of(page.inner_text("#an-requests")) >= 3
    shot(page, "analyze")


def test_with_auth_on_the_console_asks_for_the_admin_token(
    browser: object, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSOLE_ADMIN", "admin-secret-1")
    monkeypatch.setenv("CONSOLE_INFERENCE", "inference-secret-2")
    service = demo_service(
        fake, tmp_path, auth={"admin_token_env": "CONSOLE_ADMIN", "inference_token_env": "CONSOLE_INFERENCE"}
    )
    try:
        base = f"http://127.0.0.1:{service.http_port}"
        # The data behind the page is guarded like the admin API: no token 401, inference token 403.
        assert httpx.get(f"{base}/console/api/catalog").status_code == 401
        inference = {"authorization": "Bearer inference-secret-2"}
        assert httpx.get(f"{base}/console/api/analyze", headers=inference).status_code == 403
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        page = context.new_page()
        page.goto(f"{base}/console/")
        page.locator("#token-dialog").wait_for()
        assert "401" not in page.inner_text("#banner") and "authorization" in page.inner_text("#banner")
        assert page.locator("#router-list tbody tr").count() == 0  # nothing shown without the token
        page.fill("#token-input", "admin-secret-1")
        page.click("#token-save")
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#router-list tr[data-router=demo]").is_visible()
        shot(page, "routers-after-token")
        context.close()
    finally:
        service.stop()
