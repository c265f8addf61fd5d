"""`AzureMLBackend`: the four Azure ML concerns over one workspace.

Training, serving, the Prompt flow connection and preflight each implement their protocol of
backends/base.py on their own; all four share one `AzureWorkspace`, so the credential, the
clients and what is read once (region, tracking URI) are shared too. The registry hands the four
out one by one.
"""

from __future__ import annotations

from backends.azureml.connection import AzureConnections
from backends.azureml.preflight import AzurePreflight
from backends.azureml.serving import AzureServing
from backends.azureml.training import AzureTraining
from backends.azureml.workspace import AzureWorkspace
from core.settings import Settings


class AzureMLBackend:
    """`training` (TrainingBackend), `serving` (ServingBackend), `connections` (ConnectionStore)
    and `checks` (PreflightBackend) on one Azure ML workspace."""

    def __init__(self, where: Settings | AzureWorkspace) -> None:
        """On the workspace `where` names (clients created on first use), or on a workspace built
        with clients of one's own (tests)."""
        self.workspace = where if isinstance(where, AzureWorkspace) else AzureWorkspace(where)
        self.training = AzureTraining(self.workspace)
        self.serving = AzureServing(self.workspace)
        self.connections = AzureConnections(self.workspace, self.serving)
        self.checks = AzurePreflight(self.workspace)
