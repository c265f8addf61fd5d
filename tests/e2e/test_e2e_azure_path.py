"""End to end through the Azure code path, offline: `python -m devhost serve --azure`.

The dev host runs function_app.py with BACKEND=azureml, so every step goes through the code that
runs on Azure: azure-ai-ml, azure-identity (managed identity) and mlflow over HTTPS to the Azure ML
emulator (`python -m azureml_emulator`), which runs the fine-tuning job and the deployments on the
offline stack. The flow's answer comes the way a flow deployed on Azure gets it: promptflow-core
reads the custom connection from the workspace. Checked from outside, as a user would: the blob
upload, the HTTP API, the durable status, and the workspace through the real SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.models import ProvisioningState
from core.naming import APP_TAG, instance_id
from core.settings import Settings, default_endpoint_name
from devhost import azure_emulator
from devhost.demo import ask_flow, flow_env
from testing.azureml_fixtures import azureml_env, ml_client
from testing.devhost_subprocess import DevHostProcess, finished


class AzureHost(DevHostProcess):
    """The dev host on its Azure code path (`serve --azure`), with the emulator it starts."""

    @property
    def emulator(self) -> azure_emulator.Emulator:
        running = azure_emulator.running(self.run_dir)
        assert running is not None, "the dev host started no Azure ML emulator"
        return running

    def history(self, run_id: str) -> str:
        return self.status(run_id, showHistory="true", showHistoryOutput="true").text


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureHost]:
    env = {
        "LOCAL_MAX_STEPS": "150",  # the tiny model learns the sample's words; quick on 2 cores
        "NUM_TRAIN_EPOCHS": "1",
        "EVAL_SAMPLE_SIZE": "20",
    }
    h = AzureHost(tmp_path_factory.mktemp("azure-run"), env, args=("--azure",))
    h.start(ready_timeout_s=120)
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def workspace(host: AzureHost) -> Iterator[Any]:
    """The emulator's workspace through the real SDK, as the app sees it (AzureMLBackend)."""
    from backends.azureml import AzureMLBackend

    with azureml_env(host.emulator.env):
        yield AzureMLBackend(Settings())


def _key(host: AzureHost, endpoint: str) -> str:
    client = ml_client(host.emulator.env)
    return str(client.online_endpoints.get_keys(endpoint).primary_key)


def test_upload_to_answer_through_the_azure_code_path(host: AzureHost, workspace: Any) -> None:
    dataset = host.upload("azure/chats.jsonl")
    run_id = instance_id(dataset)
    body = host.wait(run_id, finished)

    out = body["output"]
    print("durations_s", out.get("durations_s"))
    assert body["runtimeStatus"] == "Completed" and out["status"] == "completed", out
    env = host.emulator.env
    endpoint = default_endpoint_name(
        env["AZURE_SUBSCRIPTION_ID"], env["AZURE_RESOURCE_GROUP"], env["AZUREML_WORKSPACE"]
    )
    assert out["endpoint"] == endpoint
    assert out["scoring_uri"] == f"{host.emulator.url}/inference/eastus2/{endpoint}/score"
    assert out["deployment"].startswith("blue-") and out["previous_deployment"] is None

    # The workspace, read through the real SDK: the job ran, its model is registered once with the
    # run's lineage, the endpoint sends all traffic to the new deployment, the connection is written.
    assert workspace.training.get_job(out["job"]).state.value == "Completed"
    models = [
        (ref, tags)
        for ref, tags in workspace.training.list_models(APP_TAG)
        if tags.get("instance-id") == run_id
    ]
    assert [ref.model_dump() for ref, _ in models] == [out["model"]]
    assert models[0][1]["dataset-blob"] == "datasets/azure/chats.jsonl"
    live = workspace.serving.get_endpoint(endpoint)
    assert live.state is ProvisioningState.SUCCEEDED and live.traffic == {out["deployment"]: 100}
    assert workspace.connections.connection_exists("phi3-finetuned")
    assert workspace.training.loss_history(out["job"]).train, "the job's MLflow loss curve is read back"

    # The flow answers through the connection, read from the workspace as on Azure.
    answer = ask_flow("How do I descale the K2?", flow_env(host.run_dir, azure=True), azure=True)
    assert answer.strip()

    # The evaluation gate scored the deployment through the emulator's scoring route.
    ev = out["evaluation"]
    assert ev["new"]["examples"] == 20 and ev["new"]["failures"] == 0 and ev["passed"] is True

    # No secret reached the durable history: not the endpoint key, not a bearer token.
    history = host.history(run_id)
    assert _key(host, endpoint) not in history
    assert "eyJ" not in history  # a JWT's header (the managed identity's tokens)


def test_a_worse_retrain_is_rejected_and_the_live_deployment_kept(host: AzureHost, workspace: Any) -> None:
    """After the run above: the same data trained on 4 steps instead of 150 (batches of 60) must
    lose against the live model; its deployment is deleted and the traffic is left alone."""
    env = host.emulator.env
    endpoint = default_endpoint_name(
        env["AZURE_SUBSCRIPTION_ID"], env["AZURE_RESOURCE_GROUP"], env["AZUREML_WORKSPACE"]
    )
    before = workspace.serving.get_endpoint(endpoint)
    [live] = [d for d, share in before.traffic.items() if share == 100]

    body = {
        "dataset": "datasets/azure/chats.jsonl",
        "overrides": {"hyperparameters": {"per_device_train_batch_size": 60}},
    }
    resp = httpx.post(f"{host.base_url}/api/runs", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    out = host.wait(run_id, finished)["output"]
    print("durations_s", out.get("durations_s"))

    assert out["status"] == "rejected_by_evaluation", out
    ev = out["evaluation"]
    assert ev["live"]["deployment"] == live and ev["new"]["score"] < ev["live"]["score"] - ev["tolerance"]
    after = workspace.serving.get_endpoint(endpoint)
    assert after.traffic == {live: 100}
    assert [d.name for d in workspace.serving.list_deployments(endpoint)] == [live]
    [(_, tags)] = [
        (r, t) for r, t in workspace.training.list_models(APP_TAG) if t.get("instance-id") == run_id
    ]
    assert tags["eval-verdict"] == "rejected"
    assert json.dumps(out).count("Bearer") == 0
