"""The offline backend: the same protocols as backends/azureml/, served by the local stack
(localml/): a tiny Phi-3 fine-tuned on CPU in a background process, an MLflow registry, scoring
servers behind an endpoint front, and a promptflow-devkit custom connection."""

from __future__ import annotations

from core.settings import Settings
from localml.preflight import LocalPreflight
from localml.serving import LocalServing
from localml.training import LocalTraining


def build(settings: Settings) -> tuple[LocalTraining, LocalServing, LocalPreflight]:
    """(TrainingBackend, ServingBackend + ConnectionStore, PreflightBackend) over `LOCAL_RUN_DIR`.

    `LocalServing` is the ConnectionStore too (a `localml.connections.PromptflowConnections` whose
    connections point at its endpoints), so `backends.registry` wires it as both."""
    return LocalTraining(settings), LocalServing(settings), LocalPreflight(settings)
