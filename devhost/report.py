"""A run report for the offline demo: the summary and the loss curve from the local MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localml.paths import RunPaths


def loss_history(paths: RunPaths, job_name: str) -> dict[str, list[tuple[int, float]]]:
    """train_loss / eval_loss per step of the MLflow run tagged with the job name."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(paths.mlflow_uri)
    client = MlflowClient()
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.job_name = '{job_name}'",
        output_format="list",
    )
    if not runs:
        return {}
    run_id = runs[0].info.run_id
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in ("train_loss", "eval_loss")
    }


def write_report(paths: RunPaths, summary: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = paths.root / "reports" / summary["instance_id"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    curves = loss_history(paths, summary["job"]) if summary.get("job") else {}
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for key, points in curves.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="." if key == "eval_loss" else None, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{summary['instance_id']}: {summary.get('model', {}).get('name', '')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png")
    plt.close(fig)
    return out
