"""Where the offline stack keeps its state, all under one run directory (default `.run/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> RunPaths:
        path = Path(root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        """Tracking and registry store (SQLite)."""
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def jobs_dir(self) -> Path:
        """One folder per fine-tuning job: spec, status, logs, outputs."""
        return self.root / "jobs"

    @property
    def serving_dir(self) -> Path:
        """Endpoint/deployment state, server pid files and logs."""
        return self.root / "serving"

    @property
    def promptflow_home(self) -> Path:
        """PF home (connections database) so the demo never touches ~/.promptflow."""
        return self.root / "promptflow"

    @property
    def azurite_dir(self) -> Path:
        return self.root / "azurite"

    @property
    def devhost_db(self) -> Path:
        """Durable instances, histories and blob-trigger receipts."""
        return self.root / "devhost.sqlite"
