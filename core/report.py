"""The run report: what a person reviewing a fine-tuning run opens first.

The `write_report` activity renders it into a local folder and uploads it next to the dataset under
`reports/<instance_id>/`:

- `summary.json`: the run summary, the loss history and the evaluation examples, as data;
- `loss.png`: the training and validation loss per step;
- `report.md`: lineage (dataset version -> job -> model version -> endpoint/deployment), the
  hyperparameters, how long each step took, a GPU-hours estimate, the evaluation gate's verdict with
  the worst-answered examples, the loss figures and the outcome.

Nothing in it is secret: it is built only from the run summary (which carries no keys), the run's
configuration, the loss metrics and the evaluation examples. Rendering is pure and deterministic (no
clock reads, no network): the same inputs give the same bytes; the caller uploads the files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from core.models import ExampleScore, LossHistory, MetricPoint, RunConfig, RunSummary

REPORT_FILES = ("summary.json", "loss.png", "report.md")

WORST_EXAMPLES = 5
NO_LOSS_TEXT = "no loss metrics were logged"
FIGURE_SIZE_IN = (8.0, 4.5)  # x FIGURE_DPI = 800 x 450 px
FIGURE_DPI = 100
_CELL_MAX_CHARS = 200
_NONE = "—"
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


# --------------------------------------------------------------------------- loss.png


def loss_png(history: LossHistory, path: Path, *, title: str) -> None:
    """Plot the train loss and the validation loss (with markers) against the step into `path`.

    With no points at all the figure says so instead. The figure is a standalone `Figure` drawn on
    an Agg canvas: pyplot is never imported, so no global backend or current-figure state is
    touched. The PNG carries no software version or date, so its bytes depend only on the data.
    """
    # Imported here: matplotlib is only needed by this activity, and its import is slow.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # explicit Agg rendering, whatever backend pyplot may use elsewhere
    ax = fig.add_subplot()
    ax.set_title(_plain_text(title))
    if history.train or history.validation:
        if history.train:
            single = len(history.train) == 1  # a lone point needs a marker to be seen
            ax.plot(
                *_xy(history.train),
                label="train loss",
                color="tab:blue",
                linewidth=1.5,
                marker="o" if single else None,
            )
        if history.validation:
            ax.plot(
                *_xy(history.validation),
                label="validation loss",
                color="tab:orange",
                marker="o",
                markersize=4,
                linewidth=1.5,
            )
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, NO_LOSS_TEXT, ha="center", va="center", fontsize=14, transform=ax.transAxes)
        ax.set_axis_off()
    fig.savefig(path, format="png", dpi=FIGURE_DPI, metadata={"Software": None})


def _xy(points: Sequence[MetricPoint]) -> tuple[list[int], list[float]]:
    ordered = sorted(points, key=lambda p: p.step)
    return [p.step for p in ordered], [p.value for p in ordered]


def _plain_text(text: str, limit: int = 120) -> str:
    """A one-line title matplotlib shows verbatim (a "$" would otherwise start mathtext)."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line.replace("$", r"\$")


# --------------------------------------------------------------------------- report.md


def report_markdown(
    summary: RunSummary,
    history: LossHistory,
    config: RunConfig | None,
    examples: dict[str, list[ExampleScore]] | None,
) -> str:
    """The report as GitHub-flavoured markdown; the same inputs give the same text."""
    sections = [
        f"# Run report: {_code(summary.instance_id)} — {summary.status.value}",
        _lineage(summary),
        _hyperparameters(config),
        _durations(summary),
        _gpu_hours(summary, config),
        _evaluation(summary, examples),
        _loss(history),
        _expiry(summary),
        _outcome(summary),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _lineage(summary: RunSummary) -> str:
    dataset = _code(summary.dataset.path)
    if summary.dataset.etag:
        dataset += f" (etag {_code(summary.dataset.etag)})"
    job = _code_or_none(summary.job)
    if summary.job and summary.job_state:
        job += f" ({_cell(summary.job_state)})"
    model = _code(f"{summary.model.name}:{summary.model.version}") if summary.model else _NONE
    rows = [
        ("Instance id", _code(summary.instance_id)),
        ("Dataset", dataset),
        ("Examples (train / validation)", f"{summary.train_examples} / {summary.validation_examples}"),
        ("Fine-tuning job", job),
        ("Registered model", model),
        ("Endpoint", _code_or_none(summary.endpoint)),
        ("Deployment", _code_or_none(summary.deployment)),
        ("Previous deployment", _code_or_none(summary.previous_deployment)),
        ("Scoring URI", _code_or_none(summary.scoring_uri)),
        ("Connection", _code_or_none(summary.connection)),
    ]
    return "## Lineage\n\n" + _table(("Item", "Value"), rows)


def _hyperparameters(config: RunConfig | None) -> str:
    if config is None:
        return ""
    base = config.base_model_name + (
        f" version {config.base_model_version}" if config.base_model_version else ""
    )
    rows = [(_code(k), _code(v)) for k, v in config.hyperparameters.as_strings().items()]
    rows += [
        ("Base model", f"{_code(base)} from registry {_code(config.model_registry)}"),
        ("Task", _code(config.task)),
        ("Training instance type", _code(config.training_instance_type)),
        ("Serving instance type", f"{_code(config.serving_instance_type)} × {config.serving_instance_count}"),
    ]
    return "## Hyperparameters\n\n" + _table(("Setting", "Value"), rows)


def _durations(summary: RunSummary) -> str:
    if not summary.durations_s:
        return "## Durations per step\n\nNo step finished."
    rows = [(_cell(step), f"{s:.1f}", human_duration(s)) for step, s in summary.durations_s.items()]
    total = sum(summary.durations_s.values())
    rows.append(("**Total**", f"**{total:.1f}**", f"**{human_duration(total)}**"))
    return "## Durations per step\n\n" + _table(("Step", "Seconds", "Duration"), rows)


def _gpu_hours(summary: RunSummary, config: RunConfig | None) -> str:
    train_s = summary.durations_s.get("train")
    if train_s is None:
        return "## GPU-hours\n\nNo training step ran: no GPU time."
    hours = gpu_hours(train_s)
    instance = _code(config.training_instance_type) if config else "an unknown instance type"
    return (
        "## GPU-hours\n\n"
        f"**≈ {hours:.2f} GPU-hours** (estimate): the training step's wall time "
        f"({human_duration(train_s)}) × 1 instance of {instance}. Wall time includes queueing and "
        "node setup; on a size with several GPUs per instance, multiply by its GPU count."
    )


def gpu_hours(train_s: float, instances: int = 1) -> float:
    """Training wall time × instances, in hours."""
    return train_s * instances / 3600


def _evaluation(summary: RunSummary, examples: dict[str, list[ExampleScore]] | None) -> str:
    ev = summary.evaluation
    if ev is None:
        return ""
    new = ev.new
    live = ev.live
    live_text = (
        f"{live.score:.4f} ({_code(live.deployment)}; {live.examples} examples, {live.failures} failed)"
        if live
        else "none (no live deployment to compare with)"
    )
    verdict = "**passed**: promoted" if ev.passed else "**rejected**: traffic unchanged"
    rows = [
        ("Metric", _cell(ev.metric)),
        ("Sample size", str(ev.sample_size)),
        (
            "New score",
            f"{new.score:.4f} ({_code(new.deployment)}; {new.examples} examples, {new.failures} failed)",
        ),
        ("Live score", live_text),
        ("Tolerance", f"{ev.tolerance:g}"),
        ("Floor", f"{ev.floor:g}"),
        ("Verdict", verdict),
        ("Reason", _cell(ev.reason)),
    ]
    text = "## Evaluation\n\n" + _table(("Item", "Value"), rows)
    worst = worst_examples((examples or {}).get("new", []))
    if worst:
        example_rows = [
            (
                str(e.index),
                f"{e.score:.4f}",
                _cell(e.prompt),
                _cell(e.reference),
                _cell(e.answer if e.ok else f"(failed) {e.error or ''}".strip()),
            )
            for e in worst
        ]
        text += (
            f"\n\n### Worst examples\n\nThe {len(worst)} lowest-scoring answers of the new deployment.\n\n"
            + _table(("Index", "Score", "Prompt", "Reference", "Answer"), example_rows)
        )
    return text


def worst_examples(scores: Iterable[ExampleScore], count: int = WORST_EXAMPLES) -> list[ExampleScore]:
    """The `count` lowest scores, lowest first (ties by example index)."""
    return sorted(scores, key=lambda e: (e.score, e.index))[:count]


def _loss(history: LossHistory) -> str:
    if not (history.train or history.validation):
        return f"## Loss\n\n{NO_LOSS_TEXT.capitalize()}.\n\n![loss](loss.png)"
    rows = [_loss_row("Train", history.train), _loss_row("Validation", history.validation)]
    return "## Loss\n\n" + _table(("Curve", "Points", "Final", "Minimum"), rows) + "\n\n![loss](loss.png)"


def _loss_row(name: str, points: Sequence[MetricPoint]) -> tuple[str, ...]:
    finite = [p for p in points if math.isfinite(p.value)]
    if not finite:
        return (name, str(len(points)), _NONE, _NONE)
    last = max(finite, key=lambda p: p.step)
    low = min(finite, key=lambda p: (p.value, p.step))
    return (
        name,
        str(len(points)),
        f"{last.value:.4f} (step {last.step})",
        f"{low.value:.4f} (step {low.step})",
    )


def _expiry(summary: RunSummary) -> str:
    if not summary.expires_at:
        return ""
    return (
        "## Endpoint expiry\n\n"
        f"The cost guard deletes endpoint {_code_or_none(summary.endpoint)} "
        f"after {_code(summary.expires_at)}."
    )


def _outcome(summary: RunSummary) -> str:
    status = f"Status {_code(summary.status.value)}"
    return f"## Outcome\n\n{status}: {summary.reason}" if summary.reason else f"## Outcome\n\n{status}."


def human_duration(seconds: float) -> str:
    """`723` -> "12 min 3 s", `3605` -> "1 h 5 s", `0.4` -> "<1 s"."""
    if seconds <= 0:
        return "0 s"
    whole = round(seconds)
    if whole == 0:
        return "<1 s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v} {unit}" for v, unit in ((hours, "h"), (minutes, "min"), (secs, "s")) if v]
    return " ".join(parts)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _one_line(text: str, limit: int = _CELL_MAX_CHARS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cell(text: str, limit: int = _CELL_MAX_CHARS) -> str:
    """Text safe inside a markdown table cell: "|" and "\\" escaped, a "<" that could open an HTML
    tag or comment as `&lt;` (a "<" before a space or digit stays readable), line breaks as `<br>`,
    at most `limit` characters."""
    lines = [" ".join(line.split()) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    flat = "\n".join(line for line in lines if line)
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    flat = _TAG_START.sub("&lt;", flat.replace("\\", "\\\\").replace("|", "\\|"))
    return flat.replace("\n", "<br>")


def _code(text: str) -> str:
    """An inline code span for an identifier, safe in a table cell (code spans show "\\" as is)."""
    value = _one_line(text).replace("|", "\\|")
    fence = "``" if "`" in value else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _code_or_none(text: str | None) -> str:
    return _code(text) if text else _NONE


# --------------------------------------------------------------------------- the three files


def summary_json(
    summary: RunSummary, history: LossHistory, examples: dict[str, list[ExampleScore]] | None
) -> str:
    """The summary's fields plus `loss` and `evaluation_examples`, as strict JSON (NaN -> null)."""
    data = json.loads(summary.model_dump_json())
    data["loss"] = json.loads(history.model_dump_json())
    data["evaluation_examples"] = (
        None
        if examples is None
        else {side: [json.loads(e.model_dump_json()) for e in scores] for side, scores in examples.items()}
    )
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(
    directory: Path,
    summary: RunSummary,
    history: LossHistory,
    config: RunConfig | None,
    examples: dict[str, list[ExampleScore]] | None,
) -> list[Path]:
    """Write `summary.json`, `loss.png` and `report.md` into `directory` (created if missing);
    return their paths in `REPORT_FILES` order."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path, md_path = (directory / name for name in REPORT_FILES)
    json_path.write_text(summary_json(summary, history, examples), encoding="utf-8")
    model = f" — {summary.model.name}:{summary.model.version}" if summary.model else ""
    loss_png(history, png_path, title=f"Loss: {summary.instance_id}{model}")
    md_path.write_text(report_markdown(summary, history, config, examples), encoding="utf-8")
    return [json_path, png_path, md_path]
