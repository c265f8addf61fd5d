"""The run report (core/report.py): summary.json, loss.png, report.md; and the offline demo's report"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.models import (
    BlobRef,
    Evaluation,
    EvaluationSide,
    ExampleScore,
    Hyperparameters,
    LossHistory,
    MetricPoint,
    ModelRef,
    PollPolicy,
    RunConfig,
    RunStatus,
    RunSummary,
)
from core.report import REPORT_FILES, human_duration, loss_png, report_markdown, write_report

RUN_ID = "ft-0123456789abcdef"
ETAG = '"0x8DCF00DBA11AD00"'
TRAIN_INSTANCE = "Standard_NC24ads_A100_v4"
POLL = PollPolicy(first_interval_s=30, max_interval_s=600, backoff=2.0, deadline_s=86400)
DURATIONS = {
    "validate": 2.5,
    "preflight": 4.25,
    "submit": 3.0,
    "train": 5025.0,  # 1 h 23 min 45 s
    "register": 12.0,
    "deploy": 723.0,  # 12 min 3 s
    "evaluate": 95.5,
    "smoke_test": 1.75,
}


def make_config() -> RunConfig:
    return RunConfig(
        base_model_name="Phi-3-mini-4k-instruct",
        base_model_version="15",
        model_registry="azureml",
        hyperparameters=Hyperparameters(
            learning_rate=0.00002, num_train_epochs=3, per_device_train_batch_size=4
        ),
        training_instance_type=TRAIN_INSTANCE,
        output_model_prefix="phi3-mini-ft",
        endpoint_name="phi3-ft",
        serving_instance_type="Standard_NC6s_v3",
        serving_instance_count=1,
        connection_name="phi3-finetuned",
        job_poll=POLL,
        deploy_poll=POLL,
        monitor_polls_per_generation=50,
        validation_fraction=0.1,
        split_seed=42,
        max_tokens=256,
        max_errors=20,
        smoke_test_prompt="Hello",
        activity_retry_attempts=3,
        activity_retry_first_interval_ms=5000,
        endpoint_ttl_hours=24,
    )


def make_examples(side: str) -> list[ExampleScore]:
    """Ten examples: number 3 has a "|" and a line break, number 1 HTML, number 8 failed."""
    scores = [0.61, 0.12, 0.87, 0.05, 0.44, 0.93, 0.30, 0.22, 0.0, 0.71]
    found = []
    for index, score in enumerate(scores):
        shift = 0.0 if side == "new" else 0.01
        found.append(
            ExampleScore(
                index=index,
                score=round(score + shift, 4),
                rouge_l=score,
                token_f1=score,
                ok=index != 8,
                error="HTTP 429 from the endpoint" if index == 8 else None,
                prompt="Compare A | B\nin one line" if index == 3 else f"question {index}",
                reference=f"reference answer {index}",
                answer=""
                if index == 8
                else f"answer {index} from {side}" + (" <b>bold</b>" if index == 1 else ""),
            )
        )
    return found


def make_summary(status: RunStatus = RunStatus.COMPLETED, **changes: Any) -> RunSummary:
    passed = status is RunStatus.COMPLETED
    evaluation = Evaluation(
        metric="mean(rouge_l, token_f1)",
        sample_size=10,
        new=EvaluationSide(
            deployment="blue-0123456789ab", score=0.425 if passed else 0.3125, examples=10, failures=1
        ),
        live=EvaluationSide(deployment="green-fedcba987654", score=0.4101, examples=10, failures=0),
        tolerance=0.02,
        floor=0.1,
        passed=passed,
        reason=(
            "new 0.4250 >= live 0.4101 - tolerance 0.02"
            if passed
            else "new 0.3125 < live 0.4101 - tolerance 0.02: traffic stays on green-fedcba987654"
        ),
    )
    fields: dict[str, Any] = {
        "status": status,
        "reason": "" if passed else "rejected by the evaluation gate: new 0.3125 < live 0.4101 - 0.02",
        "instance_id": RUN_ID,
        "dataset": BlobRef(container="datasets", name="chats/support.jsonl", etag=ETAG),
        "train_examples": 270,
        "validation_examples": 30,
        "job": f"{RUN_ID}-finetune",
        "job_state": "Completed",
        "model": ModelRef(name="phi3-mini-ft", version="7"),
        "endpoint": "phi3-ft",
        "deployment": "blue-0123456789ab",
        "previous_deployment": "green-fedcba987654",
        "scoring_uri": "https://phi3-ft.westeurope.inference.ml.azure.com/score",
        "connection": "phi3-finetuned",
        "durations_s": DURATIONS,
        "evaluation": evaluation,
        "expires_at": "2026-11-02T10:00:00Z",
        "report": f"datasets/chats/reports/{RUN_ID}/",
    }
    fields.update(changes)
    return RunSummary(**fields)


def make_history() -> LossHistory:
    train = [MetricPoint(step=s, value=round(2.5 - 0.004 * s, 4)) for s in range(10, 310, 10)]
    validation = [MetricPoint(step=s, value=v) for s, v in ((100, 1.9), (200, 1.62), (300, 1.71))]
    return LossHistory(train=train, validation=validation)


def examples() -> dict[str, list[ExampleScore]]:
    return {"new": make_examples("new"), "live": make_examples("live")}


# --------------------------------------------------------------------------- loss.png


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:  # verify() leaves the image unusable: reopen
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("history", [make_history(), LossHistory()], ids=["curves", "empty"])
def test_loss_png_decodes_at_800_by_450(tmp_path: Path, history: LossHistory) -> None:
    path = tmp_path / "loss.png"
    loss_png(history, path, title=f"Loss: {RUN_ID} — phi3-mini-ft:7 ($100 run)")
    assert png_size(path) == (800, 450)


def test_loss_png_with_only_validation_points(tmp_path: Path) -> None:
    path = tmp_path / "loss.png"
    loss_png(LossHistory(validation=[MetricPoint(step=5, value=1.0)]), path, title="one point")
    assert png_size(path) == (800, 450)


def test_loss_png_carries_no_software_version(tmp_path: Path) -> None:
    path = tmp_path / "loss.png"
    loss_png(make_history(), path, title="t")
    data = path.read_bytes()
    assert b"matplotlib" not in data.lower() and b"tEXt" not in data


def test_loss_png_leaves_pyplot_alone(tmp_path: Path) -> None:
    """A process that uses pyplot itself finds no figure of ours open, and its current figure
    unchanged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    mine = plt.figure()
    loss_png(make_history(), tmp_path / "loss.png", title="t")
    assert plt.get_fignums() == [mine.number] and plt.gcf() is mine
    plt.close(mine)


def test_loss_png_never_imports_pyplot(tmp_path: Path) -> None:
    """pyplot's global state (backend, current figure) is never touched: it is not even imported."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from core.report import loss_png; "
        "from tests.core.test_report import make_history; "
        f"loss_png(make_history(), Path({str(tmp_path / 'loss.png')!r}), title='t'); "
        "sys.exit('matplotlib.pyplot' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr or "loss_png imported matplotlib.pyplot"
    assert (tmp_path / "loss.png").stat().st_size > 0


# --------------------------------------------------------------------------- report.md


def test_report_markdown_lineage_and_hyperparameters() -> None:
    md = report_markdown(make_summary(), make_history(), make_config(), examples())
    assert md.startswith(f"# Run report: `{RUN_ID}` — completed\n")
    for value in (
        RUN_ID,
        '`datasets/chats/support.jsonl` (etag `"0x8DCF00DBA11AD00"`)',
        f"`{RUN_ID}-finetune` (Completed)",
        "`phi3-mini-ft:7`",
        "| Endpoint | `phi3-ft` |",
        "| Deployment | `blue-0123456789ab` |",
        "| Previous deployment | `green-fedcba987654` |",
        "| Connection | `phi3-finetuned` |",
        "| Examples (train / validation) | 270 / 30 |",
    ):
        assert value in md, value
    assert "| `learning_rate` | `0.00002` |" in md
    assert "| `num_train_epochs` | `3` |" in md
    assert "| `per_device_train_batch_size` | `4` |" in md
    assert "`Phi-3-mini-4k-instruct version 15` from registry `azureml`" in md
    assert f"| Training instance type | `{TRAIN_INSTANCE}` |" in md
    assert "| Serving instance type | `Standard_NC6s_v3` × 1 |" in md


def test_report_markdown_durations_and_gpu_hours() -> None:
    md = report_markdown(make_summary(), make_history(), make_config(), examples())
    assert "| Step | Seconds | Duration |" in md
    assert "| train | 5025.0 | 1 h 23 min 45 s |" in md
    assert "| deploy | 723.0 | 12 min 3 s |" in md
    assert "| smoke_test | 1.8 | 2 s |" in md
    total = sum(DURATIONS.values())  # 5867.0 s
    assert f"| **Total** | **{total:.1f}** | **1 h 37 min 47 s** |" in md
    hours = DURATIONS["train"] / 3600  # 1 instance
    assert f"**≈ {hours:.2f} GPU-hours** (estimate)" in md and "1.40 GPU-hours" in md
    assert f"× 1 instance of `{TRAIN_INSTANCE}`" in md


def test_report_markdown_worst_examples_ascending_and_escaped() -> None:
    md = report_markdown(make_summary(), make_history(), make_config(), examples())
    worst = md.split("### Worst examples", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in worst.splitlines() if line.startswith("| ") and not line.startswith("| Index")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| 8",
        "| 3",
        "| 1",
        "| 7",
        "| 6",
    ]  # 0.0, .05, .12, .22, .30
    assert [row.split(" | ")[1] for row in rows] == ["0.0000", "0.0500", "0.1200", "0.2200", "0.3000"]
    assert "| 3 | 0.0500 | Compare A \\| B<br>in one line | reference answer 3 | answer 3 from new |" in rows
    assert "(failed) HTTP 429 from the endpoint" in rows[0]
    assert rows[2].endswith("| answer 1 from new &lt;b>bold&lt;/b> |")  # HTML shows as text
    assert "question 5" not in md and "answer 5" not in md  # the best example is not listed
    assert "from live" not in md  # worst examples are the new deployment's


def test_report_markdown_evaluation_loss_expiry_outcome() -> None:
    md = report_markdown(make_summary(), make_history(), make_config(), examples())
    assert "| Metric | mean(rouge_l, token_f1) |" in md
    assert "| Sample size | 10 |" in md
    assert "| New score | 0.4250 (`blue-0123456789ab`; 10 examples, 1 failed) |" in md
    assert "| Live score | 0.4101 (`green-fedcba987654`; 10 examples, 0 failed) |" in md
    assert "| Tolerance | 0.02 |" in md and "| Floor | 0.1 |" in md
    assert "| Verdict | **passed**: promoted |" in md
    assert "| Train | 30 | 1.3000 (step 300) | 1.3000 (step 300) |" in md
    assert "| Validation | 3 | 1.7100 (step 300) | 1.6200 (step 200) |" in md
    assert "![loss](loss.png)" in md
    assert "deletes endpoint `phi3-ft` after `2026-11-02T10:00:00Z`" in md
    assert md.rstrip().endswith("Status `completed`.")


def test_report_markdown_of_a_rejected_run_shows_both_scores_and_the_reason() -> None:
    summary = make_summary(RunStatus.REJECTED_BY_EVALUATION)
    md = report_markdown(summary, make_history(), make_config(), examples())
    assert md.startswith(f"# Run report: `{RUN_ID}` — rejected_by_evaluation\n")
    assert "| New score | 0.3125 (`blue-0123456789ab`" in md
    assert "| Live score | 0.4101 (`green-fedcba987654`" in md
    assert "| Verdict | **rejected**: traffic unchanged |" in md
    assert "| Reason | new 0.3125 < live 0.4101 - tolerance 0.02: traffic stays on green-fedcba987654 |" in md
    assert "rejected by the evaluation gate: new 0.3125 < live 0.4101 - 0.02" in md.split("## Outcome")[1]


def test_report_markdown_of_a_failed_run_without_config_or_evaluation() -> None:
    summary = RunSummary(
        status=RunStatus.FAILED,
        reason="training job failed: CUDA out of memory",
        instance_id=RUN_ID,
        dataset=BlobRef(container="datasets", name="chats.jsonl"),
        job=f"{RUN_ID}-finetune",
        job_state="Failed",
        durations_s={"validate": 1.0, "train": 0.4},
    )
    md = report_markdown(summary, LossHistory(), None, None)
    assert "## Hyperparameters" not in md and "## Evaluation" not in md and "## Endpoint expiry" not in md
    assert "| Registered model | — |" in md and "| Endpoint | — |" in md
    assert "`datasets/chats.jsonl` |" in md  # no etag
    assert "| train | 0.4 | <1 s |" in md and "| **Total** | **1.4** | **1 s** |" in md
    assert "**≈ 0.00 GPU-hours** (estimate)" in md and "an unknown instance type" in md
    assert "No loss metrics were logged." in md
    assert md.rstrip().endswith("Status `failed`: training job failed: CUDA out of memory")


def test_report_markdown_without_a_training_step() -> None:
    summary = make_summary(durations_s={"validate": 1.0}, evaluation=None)
    md = report_markdown(summary, LossHistory(), make_config(), None)
    assert "No training step ran" in md


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (0.3, "<1 s"), (59.6, "1 min"), (723, "12 min 3 s"), (3600, "1 h"), (3605, "1 h 5 s")],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# --------------------------------------------------------------------------- write_report


def test_write_report_files_and_summary_round_trip(tmp_path: Path) -> None:
    summary, history, found = make_summary(), make_history(), examples()
    paths = write_report(tmp_path / "reports" / RUN_ID, summary, history, make_config(), found)
    assert [p.name for p in paths] == list(REPORT_FILES)
    assert all(p.parent == tmp_path / "reports" / RUN_ID for p in paths)
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert LossHistory.model_validate(data.pop("loss")) == history
    assert {
        k: [ExampleScore.model_validate(e) for e in v] for k, v in data.pop("evaluation_examples").items()
    } == found
    assert RunSummary.model_validate(data) == summary
    assert png_size(paths[1]) == (800, 450)
    assert paths[2].read_text(encoding="utf-8") == report_markdown(summary, history, make_config(), found)


def test_write_report_without_examples(tmp_path: Path) -> None:
    paths = write_report(tmp_path, make_summary(), LossHistory(), None, None)
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert data["evaluation_examples"] is None and data["loss"] == {"train": [], "validation": []}
    assert "### Worst examples" not in paths[2].read_text(encoding="utf-8")
    assert png_size(paths[1]) == (800, 450)


def test_write_report_is_deterministic(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a", make_summary(), make_history(), make_config(), examples())
    b = write_report(tmp_path / "b", make_summary(), make_history(), make_config(), examples())
    for first, second in zip(a, b, strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name


def test_summary_json_is_strict_json_even_with_a_nan_loss(tmp_path: Path) -> None:
    history = LossHistory(train=[MetricPoint(step=1, value=float("nan")), MetricPoint(step=2, value=1.5)])
    paths = write_report(tmp_path, make_summary(), history, None, None)
    text = paths[0].read_text(encoding="utf-8")
    assert "NaN" not in text and json.loads(text)["loss"]["train"][0]["value"] is None
    assert "| Train | 2 | 1.5000 (step 2) | 1.5000 (step 2) |" in paths[2].read_text(encoding="utf-8")
    assert png_size(paths[1]) == (800, 450)
