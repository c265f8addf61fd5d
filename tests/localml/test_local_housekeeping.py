"""The guardrail methods of the offline backend, for real: endpoint tags, deployment listing and
endpoint teardown on real fronts and scoring servers (echo model), the loss history and model
housekeeping on a job really trained into a local MLflow store, and the Prompt flow connection
through promptflow-devkit.

The expensive fixtures are shared with test_local_serving.py and test_local_training.py (beside
this file; the trained job is built once per session, whichever module asks first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.models import DeploymentInfo, DeploymentSpec, LossHistory, MetricPoint, ModelRef
from core.payload import promptflow_payload
from localml.connections import _bound_promptflow_home
from localml.serving import LocalServing
from localml.training import LocalTraining
from tests.localml import test_local_serving, test_local_training
from tests.localml.test_local_serving import ENDPOINT, PS, create_deployment, gone, key_of, spec, wait_for
from tests.localml.test_local_training import TRAIN_STEPS, Trained

# Fixtures of those modules, reused (pytest finds fixtures among a module's attributes). `trained`
# and `dataset` are session-scoped and built once whichever module asks first.
paths = test_local_serving.paths
serving = test_local_serving.serving
dataset = test_local_training.dataset
trained = test_local_training.trained

OTHER = "phi3-ft-other"
EXPIRES = "expires-at"


def endpoint_dir(serving: LocalServing, name: str = ENDPOINT) -> Path:
    return serving.paths.serving_dir / "endpoints" / name


def create_endpoint(serving: LocalServing, name: str, tags: dict[str, str]) -> None:
    serving.begin_create_endpoint(name, tags)
    wait_for(lambda: serving.get_endpoint(name).state, lambda s: s is PS.SUCCEEDED, f"endpoint {name}")


# ---------------------------------------------------------------------------- endpoint tags


def test_endpoint_tags_are_persisted_merged_and_listed(serving: LocalServing) -> None:
    tags = {"created-by": "phi3-finetune-pipeline", EXPIRES: "2030-01-01T00:00:00+00:00"}
    create_endpoint(serving, ENDPOINT, tags)
    create_endpoint(serving, OTHER, {"created-by": "someone-else"})
    create_deployment(serving, "blue")
    serving.set_traffic(ENDPOINT, {"blue": 100})
    before = serving.get_endpoint(ENDPOINT)
    assert before.tags == tags
    pids = serving.processes()

    serving.update_endpoint_tags(ENDPOINT, {EXPIRES: "2030-01-02T00:00:00+00:00", "run": "ft-1"})
    merged = {**tags, EXPIRES: "2030-01-02T00:00:00+00:00", "run": "ft-1"}
    after = serving.get_endpoint(ENDPOINT)
    assert after.tags == merged
    assert after.model_copy(update={"tags": tags}) == before  # traffic, deployments, URI untouched
    assert serving.processes() == pids  # nothing restarted
    assert serving.score(ENDPOINT, None, promptflow_payload("still routed")).output == "still routed"

    serving.begin_create_endpoint(ENDPOINT, {"created-by": "x"})  # exists: its tags stay
    fresh = LocalServing(serving.paths)  # what another activity (or a restarted host) reads
    assert fresh.get_endpoint(ENDPOINT).tags == merged
    assert {e.name: e.tags for e in fresh.list_endpoints()} == {
        ENDPOINT: merged,
        OTHER: {"created-by": "someone-else"},
    }
    assert [e.state for e in fresh.list_endpoints()] == [PS.SUCCEEDED, PS.SUCCEEDED]
    with pytest.raises(ValueError, match="not found"):
        serving.update_endpoint_tags("no-such-endpoint", {"a": "b"})


def test_list_deployments_reports_the_spec_and_state(serving: LocalServing) -> None:
    assert serving.list_deployments(ENDPOINT) == []  # no endpoint
    create_endpoint(serving, ENDPOINT, {})
    assert serving.list_deployments(ENDPOINT) == []
    green = DeploymentSpec(
        endpoint_name=ENDPOINT,
        deployment_name="green",
        model=ModelRef(name="phi3-mini-ft", version="7"),
        instance_type="Standard_NC24ads_A100_v4",
        instance_count=2,
        tags={"created-by": "test", "model-version": "7"},
    )
    serving.begin_create_deployment(green)
    create_deployment(serving, "blue")

    listed = LocalServing(serving.paths).list_deployments(ENDPOINT)
    assert [d.name for d in listed] == ["blue", "green"]
    assert listed[0] == DeploymentInfo(
        name="blue",
        instance_type=spec("blue").instance_type,
        instance_count=spec("blue").instance_count,
        state=PS.SUCCEEDED,
        tags=spec("blue").tags,
    )
    assert (listed[1].instance_type, listed[1].instance_count) == ("Standard_NC24ads_A100_v4", 2)
    assert listed[1].tags == green.tags
    assert listed[1].state in {PS.CREATING, PS.SUCCEEDED}


def test_listing_never_restarts_stopped_processes(serving: LocalServing) -> None:
    """The sweep and teardown list after `make down`: nothing may come back to life."""
    create_endpoint(serving, ENDPOINT, {"created-by": "test"})
    create_deployment(serving, "blue")
    serving.stop_all()
    assert serving.processes() == {}
    [listed] = serving.list_endpoints()
    assert listed.name == ENDPOINT and listed.state is PS.SUCCEEDED and listed.tags == {"created-by": "test"}
    [deployment] = serving.list_deployments(ENDPOINT)
    assert deployment.name == "blue" and deployment.state is PS.SUCCEEDED
    assert serving.processes() == {}


# ---------------------------------------------------------------------------- endpoint deletion


def test_delete_endpoint_stops_its_processes_and_forgets_it(serving: LocalServing) -> None:
    create_endpoint(serving, ENDPOINT, {"created-by": "test"})
    create_endpoint(serving, OTHER, {})
    create_deployment(serving, "blue")
    create_deployment(serving, "green")
    serving.set_traffic(ENDPOINT, {"blue": 100})
    pids = serving.processes()
    mine = {label: pid for label, pid in pids.items() if label.split("/")[0] == ENDPOINT}
    assert set(mine) == {ENDPOINT, f"{ENDPOINT}/blue", f"{ENDPOINT}/green"}
    old_key = key_of(serving)

    serving.delete_endpoint(ENDPOINT)  # with traffic on a deployment: the whole endpoint goes
    assert all(gone(pid) for pid in mine.values())
    assert serving.get_endpoint(ENDPOINT).state is PS.NOT_FOUND
    assert serving.get_deployment_state(ENDPOINT, "blue") is PS.NOT_FOUND
    assert serving.list_deployments(ENDPOINT) == []
    assert [e.name for e in serving.list_endpoints()] == [OTHER]
    assert not endpoint_dir(serving).exists()
    assert serving.processes() == {OTHER: pids[OTHER]}  # the other endpoint is untouched

    serving.delete_endpoint(ENDPOINT)  # already gone: no-op
    serving.delete_endpoint("never-existed")
    with pytest.raises(ValueError, match="not found"):
        serving.score(ENDPOINT, None, promptflow_payload("hi"))

    create_endpoint(serving, ENDPOINT, {})  # the name can be used again: a new endpoint
    info = serving.get_endpoint(ENDPOINT)
    assert info.deployments == [] and info.tags == {}
    assert key_of(serving) != old_key


def test_an_interrupted_delete_is_finished_and_blocks_new_work(serving: LocalServing) -> None:
    """A host killed during delete_endpoint leaves endpoint.json marked `deleting` (processes maybe
    still up), or a folder without endpoint.json; neither may come back to life."""
    create_endpoint(serving, ENDPOINT, {})
    create_deployment(serving, "blue")
    pids = serving.processes()
    path = endpoint_dir(serving) / "endpoint.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "deleting": {"at": "2030-01-01T00:00:00+00:00", "id": "crashed"}}))

    assert serving.get_endpoint(ENDPOINT).state is PS.DELETING
    assert serving.get_deployment_state(ENDPOINT, "blue") is PS.DELETING
    assert [d.state for d in serving.list_deployments(ENDPOINT)] == [PS.DELETING]
    with pytest.raises(ValueError, match="being deleted"):
        serving.begin_create_deployment(spec("green"))
    with pytest.raises(ValueError, match="being deleted"):
        serving.begin_create_endpoint(ENDPOINT, {})

    assert serving.reconcile() == {}  # what a restarted host does: it finishes the delete
    assert all(gone(pid) for pid in pids.values())
    assert serving.get_endpoint(ENDPOINT).state is PS.NOT_FOUND

    # Killed after endpoint.json went but before the folder did: the leftovers are not adopted.
    leftover = endpoint_dir(serving) / "deployments" / "blue"
    leftover.mkdir(parents=True)
    (leftover / "deployment.json").write_text(json.dumps({"port": 1, "model": {"name": "m", "version": "1"}}))
    (endpoint_dir(serving) / "key").write_text("old-key")
    assert serving.get_endpoint(ENDPOINT).state is PS.NOT_FOUND
    create_endpoint(serving, ENDPOINT, {})
    assert serving.get_endpoint(ENDPOINT).deployments == []
    assert key_of(serving) != "old-key"


# ---------------------------------------------------------------------------- loss history


def test_loss_history_of_a_trained_job(trained: Trained) -> None:
    from mlflow import MlflowClient

    backend, job = trained.backend, trained.spec.job_name
    history = backend.loss_history(job)
    train, validation = history.train, history.validation
    assert len(train) >= 5 and len(validation) >= 2
    for series in (train, validation):
        steps = [p.step for p in series]
        assert steps == sorted(set(steps))  # sorted, one point per step
    assert train[-1].step == TRAIN_STEPS and validation[0].step == 0
    assert train[-1].value < train[0].value

    client = MlflowClient(tracking_uri=backend.paths.mlflow_uri)
    run_id = backend.status(job)["run_id"]
    logged = sorted(client.get_metric_history(run_id, "eval_loss"), key=lambda m: m.step)
    assert validation == [MetricPoint(step=m.step, value=m.value) for m in logged]

    assert backend.loss_history("no-such-job") == LossHistory()
    assert backend.loss_history("quote'd job") == LossHistory()


def test_loss_history_without_an_mlflow_store(tmp_path: Path) -> None:
    from core.settings import Settings

    backend = LocalTraining(Settings(BACKEND="local", LOCAL_RUN_DIR=str(tmp_path)))
    assert backend.loss_history("ft-anything") == LossHistory()
    assert backend.list_models("phi3-finetune-pipeline") == []
    backend.delete_model(ModelRef(name="m", version="1"))
    assert not (tmp_path / "mlflow").exists()  # reading created no store


# ---------------------------------------------------------------------------- model housekeeping


def test_model_tags_listing_and_deletion(trained: Trained) -> None:
    from mlflow import MlflowClient

    backend, job = trained.backend, trained.spec.job_name
    mine = backend.register_model(job, "phi3-guardrails-ft", {"created-by": "guardrails", "gate": "pending"})
    theirs = backend.register_model(job, "phi3-guardrails-other", {"created-by": "someone-else"})
    client = MlflowClient(tracking_uri=backend.paths.mlflow_uri, registry_uri=backend.paths.mlflow_uri)

    backend.set_model_tags(mine, {"gate": "passed", "score": "0.81"})
    tags = client.get_model_version(mine.name, mine.version).tags
    assert tags["gate"] == "passed" and tags["score"] == "0.81"  # added / overwritten
    assert tags["created-by"] == "guardrails" and tags["job_name"] == job  # kept
    with pytest.raises(LookupError):
        backend.set_model_tags(ModelRef(name=mine.name, version="99"), {"gate": "passed"})

    listed = backend.list_models("guardrails")
    assert [ref for ref, _ in listed] == [mine]
    assert listed[0][1] == tags
    assert [ref for ref, _ in backend.list_models("someone-else")] == [theirs]
    assert backend.list_models("nobody") == []

    backend.delete_model(mine)
    assert backend.list_models("guardrails") == []
    assert client.search_model_versions(f"name = '{mine.name}'") == []
    backend.delete_model(mine)  # already gone: no-op
    backend.delete_model(ModelRef(name="never-registered", version="1"))
    assert [ref for ref, _ in backend.list_models("someone-else")] == [theirs]


# ---------------------------------------------------------------------------- Prompt flow connection


def test_connection_exists_and_delete(serving: LocalServing, monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process (or a child, if promptflow is already bound to another run's home) and, as
    the dev host asks with LOCALML_PUBLISH_IN_CHILD=1, always in a child process. (Each child
    imports promptflow: a few seconds. Hence few calls.)"""
    create_endpoint(serving, ENDPOINT, {})
    assert not serving.connection_exists("phi3-finetuned")  # no store yet: promptflow not needed
    serving.delete_connection("phi3-finetuned")
    serving.publish_connection("phi3-finetuned", ENDPOINT)
    assert _bound_promptflow_home() != (Path.home() / ".promptflow").resolve()  # never the user's home

    serving.delete_endpoint(ENDPOINT)
    assert serving.connection_exists("phi3-finetuned")  # published, and the endpoint's teardown left it

    children: list[str] = []
    real = LocalServing._promptflow_child

    def spy(self: LocalServing, args: list[str], what: str) -> Any:
        children.append(args[0])
        return real(self, args, what)

    monkeypatch.setattr(LocalServing, "_promptflow_child", spy)
    monkeypatch.setenv("LOCALML_PUBLISH_IN_CHILD", "1")
    serving.delete_connection("phi3-finetuned")
    assert not serving.connection_exists("phi3-finetuned")
    assert children == ["delete-connection", "connection-exists"]

    monkeypatch.delenv("LOCALML_PUBLISH_IN_CHILD")
    serving.delete_connection("phi3-finetuned")  # already gone: no-op
    assert (serving.paths.promptflow_home / "pf.sqlite").is_file()
