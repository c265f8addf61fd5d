"""The runs dashboard in a real browser (headless system Chromium through Playwright) against the
dev host running real offline runs: the list shows a run, its page follows it live to
"completed" with a loss curve; a worse retrain is rejected and its page says why with both
scores; a dry run shows its plan; a run started from the page is canceled from the page; the
pages work at phone width, with no console error anywhere.

`DASHBOARD_SCREENSHOTS=<dir>` saves the list and run pages there (the README's pictures).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from core.naming import instance_id
from testing.browser import PHONE, open_page
from testing.devhost_subprocess import DevHost, finished, serve

RUN_S = 240_000  # ms: a whole offline run (train, deploy, evaluate), with room for a loaded machine
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    yield from serve(
        tmp_path_factory.mktemp("dashboard"),
        # The dev host's 150 steps: a model that clearly beats a 4-step one (100 does not, always).
        EVAL_SAMPLE_SIZE="20",
    )


@pytest.fixture(scope="module")
def completed(host: DevHost) -> str:
    """The id of a run started by an upload (followed live by the first test)."""
    return instance_id(host.upload("dash/chats.jsonl"))


def dashboard(host: DevHost, fragment: str = "") -> str:
    return f"{host.base_url}/api/dashboard{fragment}"


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def stage(page: Page, key: str) -> Locator:
    return page.locator(f"[data-testid=stage][data-stage={key}]")


def test_list_shows_the_run_and_its_page_follows_it_to_completed(
    host: DevHost, completed: str, page: Page, console_errors: list[str]
) -> None:
    page.goto(dashboard(host))
    row = page.locator(f"[data-testid=run-row][data-run={completed}]")
    expect(row).to_be_visible()
    expect(row.locator("td").nth(2)).to_have_text("datasets/dash/chats.jsonl")
    expect(page.get_by_test_id("refresh-state")).to_contain_text("refreshing")  # a run is active

    row.get_by_role("link").click()
    expect(page.get_by_test_id("run-id")).to_have_text(completed)
    # Live: training shows as the active step while the job runs, with the steps before it done.
    expect(stage(page, "train")).to_have_attribute("data-state", "active", timeout=RUN_S)
    for key in ("validate", "preflight", "submit"):
        expect(stage(page, key)).to_have_attribute("data-state", "done")
    expect(stage(page, "register")).to_have_attribute("data-state", "pending")
    # The job as the backend reports it now, not the run's first read ("Queued": with job events
    # the run reads the job again only when it ends).
    # (The local job shows Queued for its first seconds, while it loads torch and builds the model.)
    expect(page.get_by_test_id("job-status")).to_contain_text(re.compile(r"Running|Completed"), timeout=RUN_S)

    # The page refreshes itself until the run ends: every step done, the loss curve drawn.
    expect(page.get_by_test_id("state").first).to_have_text("completed", timeout=RUN_S)
    states = page.locator("[data-testid=stage]").evaluate_all("els => els.map(e => e.dataset.state)")
    assert states and set(states) == {"done"}, states
    train_points = int(page.get_by_test_id("loss-train").get_attribute("data-points") or 0)
    assert train_points >= 3, train_points
    expect(page.get_by_test_id("verdict")).to_have_text("promoted")
    expect(page.get_by_test_id("refresh-state")).to_have_text("run ended")
    shot(page, "dashboard-run.png")

    page.get_by_test_id("back").click()
    expect(page.locator(f"[data-testid=run-row][data-run={completed}] [data-testid=state]")).to_have_text(
        "completed"
    )
    assert console_errors == []


def test_a_rejected_run_shows_its_reason_and_both_scores(
    host: DevHost, completed: str, page: Page, console_errors: list[str]
) -> None:
    host.wait(completed, finished)
    # Trained on 4 steps instead of 150 (batches of 60): it must lose against the live model.
    body = {
        "dataset": "datasets/dash/chats.jsonl",
        "overrides": {"hyperparameters": {"per_device_train_batch_size": 60}},
    }
    resp = httpx.post(f"{host.base_url}/api/runs", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    rejected = resp.json()["id"]

    out = host.wait(rejected, finished)["output"]
    assert out["status"] == "rejected_by_evaluation", out
    evaluation = out["evaluation"]
    page.goto(dashboard(host, f"#/runs/{rejected}"))
    expect(page.get_by_test_id("state").first).to_have_text("rejected by evaluation")
    expect(page.get_by_test_id("reason")).to_have_text(out["reason"])
    expect(page.get_by_test_id("verdict")).to_have_text("rejected")
    expect(page.get_by_test_id("new-score")).to_have_text(f"{evaluation['new']['score']:.3f}")
    expect(page.get_by_test_id("live-score")).to_have_text(f"{evaluation['live']['score']:.3f}")
    expect(stage(page, "evaluate")).to_have_attribute("data-state", "failed")
    expect(stage(page, "traffic")).to_have_attribute("data-state", "skipped")

    # The per-example table (from the run report): both answers and both scores, sortable.
    table = page.get_by_test_id("examples")
    expect(table.locator("[data-testid=example-row]")).to_have_count(
        evaluation["sample_size"], timeout=30_000
    )
    table.locator("th", has_text="New score").click()
    scores = [float(t) for t in table.locator("[data-testid=example-row] td:nth-child(5)").all_inner_texts()]
    assert scores == sorted(scores) and len(scores) == evaluation["sample_size"]
    table.locator("th", has_text="New score").click()
    again = [float(t) for t in table.locator("[data-testid=example-row] td:nth-child(5)").all_inner_texts()]
    assert again == sorted(scores, reverse=True)
    assert table.locator("th", has_text="Live answer").count() == 1
    shot(page, "dashboard-rejected.png")
    assert console_errors == []


def test_an_invalid_dataset_shows_file_line_and_field(
    host: DevHost, page: Page, console_errors: list[str]
) -> None:
    good = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    bad = b'{"messages": [{"role": "robot", "content": "hi"}]}\n'
    run_id = instance_id(host.upload("dash/broken.jsonl", good * 40 + bad))
    assert host.wait(run_id, finished)["output"]["status"] == "invalid_dataset"
    page.goto(dashboard(host, f"#/runs/{run_id}"))
    expect(page.get_by_test_id("state").first).to_have_text("invalid dataset")
    rows = page.get_by_test_id("validation-errors").locator("tbody tr")
    expect(rows.first).to_be_visible()
    found = [r.locator("td").all_inner_texts() for r in rows.all()]
    line_41 = [cells for cells in found if cells[1] == "41"]
    assert line_41 and line_41[0][0].endswith("broken.jsonl") and "role" in line_41[0][2], found
    expect(stage(page, "validate")).to_have_attribute("data-state", "failed")
    expect(stage(page, "submit")).to_have_attribute("data-state", "skipped")
    assert console_errors == []


def test_dry_run_retrain_and_cancel_from_the_page(
    host: DevHost, completed: str, page: Page, console_errors: list[str]
) -> None:
    page.goto(dashboard(host, f"#/runs/{completed}"))
    expect(page.get_by_test_id("run-id")).to_have_text(completed)
    expect(page.get_by_test_id("cancel")).to_be_disabled()  # it ended

    # A dry run: the API answers with the plan; its page shows it.
    page.get_by_test_id("epochs").fill("2")
    page.get_by_test_id("dry-run").click()
    answer = page.get_by_test_id("action-answer")
    expect(answer).to_contain_text('"status": 200', timeout=90_000)
    expect(answer).to_contain_text("planned")
    assert "statusQueryGetUri" not in answer.inner_text()  # management links (a key on Azure) not shown
    page.get_by_test_id("new-run-link").click()
    expect(page.get_by_test_id("plan")).to_contain_text("Estimated GPU hours")
    expect(page.locator("[data-testid=plan] [data-fact=Epochs] dd")).to_have_text("2")  # as asked

    # A retrain with 3 epochs, started from the page, then canceled from its own page.
    page.goto(dashboard(host, f"#/runs/{completed}"))
    page.get_by_test_id("epochs").fill("3")
    page.get_by_test_id("retrain").click()
    expect(answer).to_contain_text('"status": 202')
    link = page.get_by_test_id("new-run-link")
    new_id = (link.text_content() or "").removeprefix("open ")
    assert re.fullmatch(r"ft-[0-9a-f]{16}", new_id), new_id
    link.click()
    expect(page.get_by_test_id("run-id")).to_have_text(new_id)
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("cancel-confirm")).to_be_visible()
    page.get_by_test_id("cancel-yes").click()
    expect(page.get_by_test_id("action-answer")).to_contain_text('"status": 202')
    expect(page.get_by_test_id("state").first).to_have_text("canceled", timeout=60_000)
    out = host.wait(new_id, finished)["output"]
    assert out["status"] == "canceled" and "canceled from the dashboard" in out["reason"], out
    page.goto(dashboard(host))
    expect(page.locator("[data-testid=run-row]")).to_have_count(
        5
    )  # 2 real runs, 1 invalid, 1 dry, 1 canceled
    shot(page, "dashboard-list.png")
    assert console_errors == []


def test_the_pages_work_at_phone_width(host: DevHost, completed: str, browser: Browser) -> None:
    errors: list[str] = []
    with open_page(browser, errors, **PHONE) as phone:
        for fragment, ready in (("", "run-row"), (f"#/runs/{completed}", "timeline")):
            phone.goto(dashboard(host, fragment))
            expect(phone.get_by_test_id(ready).first).to_be_visible()
            overflow = phone.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{fragment or 'list'}: the page is {overflow} px wider than the phone"
        phone.get_by_test_id("back").tap()
        expect(phone.locator(f"[data-testid=run-row][data-run={completed}]")).to_be_visible()
    assert errors == []
