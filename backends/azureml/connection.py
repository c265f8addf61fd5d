"""The Prompt flow custom connection on Azure ML: a CustomKeys workspace connection in the AI
project whose `endpoint` config is the endpoint's scoring URI and whose `key` secret is its primary
key (read through the serving side, never returned)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from azure.ai.ml._restclient.arm_ml_service.models import (
    CustomKeys as RestCustomKeys,
)
from azure.ai.ml._restclient.arm_ml_service.models import (
    CustomKeysWorkspaceConnectionProperties as RestCustomKeysConnectionProperties,
)
from azure.ai.ml.entities import WorkspaceConnection
from azure.core.exceptions import ResourceNotFoundError

from backends.azureml.serving import AzureServing
from backends.azureml.workspace import AzureWorkspace

log = logging.getLogger(__name__)

# Metadata that makes Prompt flow read a CustomKeys workspace connection as a `CustomConnection`.
PROMPTFLOW_CONNECTION_TYPE = {
    "azureml.flow.connection_type": "Custom",
    "azureml.flow.module": "promptflow.connections",
}


class _CustomKeysCredentials:
    """`credentials` for a `WorkspaceConnection` of type "custom" that serialises as CustomKeys.

    azure-ai-ml 1.35 maps type "custom" to the REST category "CustomKeys"
    (entities/_workspace/connections/workspace_connection.py:491-492) but has no credential class
    for the CustomKeys auth type: `ApiKeyConfiguration` serialises as authType "ApiKey" with
    `credentials.key` (entities/_credentials.py:1008-1027). Prompt flow builds a CustomConnection
    from a CustomKeys connection as `secrets = properties.credentials.keys` and
    `configs = properties.metadata` minus the `azureml.flow.*` entries, and needs
    `azureml.flow.connection_type = Custom` to know the class (promptflow-core
    `WorkspaceConnectionProvider.build_connection_dict_from_rest_object`). With ApiKey auth,
    `credentials.keys` does not exist and the flow fails to load the connection.
    `WorkspaceConnection._to_rest_object` (workspace_connection.py:485-525) only calls these two
    methods on its credentials, so this object yields
    `{"authType": "CustomKeys", "category": "CustomKeys", "credentials": {"keys": {...}}}`.
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.type = "custom_keys"
        self.keys = dict(keys)

    def _get_rest_properties_class(self) -> type[RestCustomKeysConnectionProperties]:
        return RestCustomKeysConnectionProperties

    def _to_workspace_connection_rest_object(self) -> RestCustomKeys:
        return RestCustomKeys(keys_property=dict(self.keys))

    def __repr__(self) -> str:  # names only, never the values
        return f"_CustomKeysCredentials(keys={sorted(self.keys)})"


def custom_connection(*, name: str, endpoint_uri: str, key: str) -> WorkspaceConnection:
    """The Prompt flow `CustomConnection` as a workspace connection.

    Prompt flow reads it as configs = {"endpoint": endpoint_uri} and secrets = {"key": key}
    (see `_CustomKeysCredentials`).
    """
    return WorkspaceConnection(
        name=name,
        type="custom",  # REST category CustomKeys
        target=endpoint_uri,  # required by the SDK; Prompt flow ignores target for CustomKeys
        credentials=_CustomKeysCredentials({"key": key}),  # type: ignore[arg-type]
        metadata={"endpoint": endpoint_uri, **PROMPTFLOW_CONNECTION_TYPE},
        is_shared=False,
    )


class AzureConnections:
    """`ConnectionStore` in the AI project of one Azure ML workspace; endpoint keys are read
    through `serving`."""

    def __init__(self, workspace: AzureWorkspace, serving: AzureServing) -> None:
        self._ws = workspace
        self._serving = serving

    def publish_connection(self, name: str, endpoint: str) -> str:
        uri, key = self._serving.endpoint_secret(endpoint)
        connection = custom_connection(name=name, endpoint_uri=uri, key=key)
        self._ws.project.connections.create_or_update(connection)
        log.info("connection %s now points at %s", name, uri)
        return uri

    def connection_exists(self, name: str) -> bool:
        """`connections.get` without `populate_secrets` (operations/_workspace_connections_operations.py
        :74-100): no credential is read; a 404 means no such connection."""
        try:
            self._ws.project.connections.get(name=name)
        except ResourceNotFoundError:
            return False
        return True

    def delete_connection(self, name: str) -> None:
        """`connections.delete` (operations/_workspace_connections_operations.py:132-145; the service
        answers 200/204, 404 -> ResourceNotFoundError): no error if the connection is already gone."""
        try:
            self._ws.project.connections.delete(name=name)
        except ResourceNotFoundError:
            return
        log.info("connection %s deleted", name)
