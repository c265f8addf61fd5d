"""How a client process is pointed at the emulator: only settings the SDKs read themselves.

- `ARM_CLOUD_METADATA_URL`: azure-ai-ml loads the cloud from ARM's metadata document (as for a
  sovereign cloud or Azure Stack) and uses its `resourceManager` as the ARM base URL;
- `REGISTRY_DISCOVERY_ENDPOINT_URL`: where azure-ai-ml discovers a registry (the `azureml` one);
- `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`: App Service managed identity, what a Function App on
  Azure uses; `DefaultAzureCredential` picks it up;
- `REQUESTS_CA_BUNDLE` (requests: azure-core, mlflow) and `SSL_CERT_FILE` (httpx, ssl): trust the
  emulator's CA next to the public ones;
- the app's own settings for the workspace the emulator hosts (AZURE_SUBSCRIPTION_ID, ...), and
  AZUREML_INFERENCE_URL_TEMPLATE, where online endpoints' public hosts are.
"""

from __future__ import annotations

from pathlib import Path

from azureml_emulator.world import World


def client_env(base_url: str, ca_bundle: Path, identity_header: str, world: World) -> dict[str, str]:
    port = base_url.rsplit(":", 1)[-1]
    return {
        # The cloud's name, unique per emulator: azure-ai-ml caches clouds by name for the process.
        "AZUREML_CURRENT_CLOUD": f"AzureMLEmulator{port}",
        "ARM_CLOUD_METADATA_URL": f"{base_url}/metadata/endpoints?api-version=2022-09-01",
        "REGISTRY_DISCOVERY_ENDPOINT_URL": f"{base_url}/",
        "IDENTITY_ENDPOINT": f"{base_url}/msi/token",
        "IDENTITY_HEADER": identity_header,
        "REQUESTS_CA_BUNDLE": str(ca_bundle),
        "SSL_CERT_FILE": str(ca_bundle),
        "AZURE_SUBSCRIPTION_ID": world.subscription,
        "AZURE_RESOURCE_GROUP": world.resource_group,
        "AZUREML_WORKSPACE": world.workspaces[0],
        "AZUREML_INFERENCE_URL_TEMPLATE": f"{base_url}/inference/{{region}}/{{endpoint}}",
    }
