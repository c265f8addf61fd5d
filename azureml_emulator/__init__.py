"""An Azure Machine Learning emulator, like Azurite is for storage: an HTTPS server on 127.0.0.1
that answers the ARM and Azure ML REST routes this app's real SDK calls make (azure-ai-ml,
azure-identity, mlflow), at the api-versions the installed SDK sends.

- `world`: the emulated service's state and its behaviour (jobs, models, endpoints, deployments,
  connections, quota, the azureml registry), scriptable per test (`JobScript`, `DeploymentScript`,
  `Fault`). Pure Python, no HTTP.
- `openapi`: request bodies validated against the official OpenAPI definitions kept in `specs/`
  (a verbatim subset of Azure/azure-rest-api-specs, with source path and commit).
- `server`: the aiohttp HTTPS app (certificate made at start), the ARM envelope (errors, long-running
  operations with Azure-AsyncOperation, paging) and the routes.
- `clients`: the environment a process needs to talk to it with no code change: a custom cloud via
  ARM_CLOUD_METADATA_URL, the registry discovery URL, App Service managed identity
  (IDENTITY_ENDPOINT/IDENTITY_HEADER, tokens are JWTs for the audience asked, checked on every
  route) and the CA bundle (REQUESTS_CA_BUNDLE, SSL_CERT_FILE).
- `local_executor`: jobs and deployments run for real on the offline stack (localml/) instead of
  following scripts: `--azure` in the dev host, `make demo-azure`.
- `tunnel`: a CONNECT proxy that answers for management.azure.com, for clients that hard-code it
  (promptflow-core's workspace connection provider).

Run it alone with `python -m azureml_emulator --state-dir DIR [--execute-local RUN_DIR]`.
"""
