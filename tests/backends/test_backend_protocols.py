"""The promises backends/base.py writes down, checked on every implementation of each protocol.

Training, serving and connections: the offline backend (localml), the Azure ML backend driven
through the real azure-ai-ml SDK against the Azure ML emulator (both built by `backends.registry`
as the app builds them), and the in-memory Azure the replay tests run against (testing/fakes.py),
which must keep the same promises or the replay tests prove things about no real backend.
Datasets and release turns: the blob store and the blob turn store on Azurite, and the fake. What
one implementation alone does (request bodies, processes, files) is tested in its own suite
(test_azureml_contract.py, test_local_*.py, test_blob_store.py, test_turn_store.py); here only
what a caller of the protocol may rely on.

Fixtures are module-scoped (one run dir, one emulator world, one container); each test uses names
of its own, so the tests do not see each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from azureml_emulator.world import World
from backends import registry
from backends.base import (
    BlobChangedError,
    BlobStoreError,
    ConnectionStore,
    DatasetStore,
    PreflightBackend,
    ServingBackend,
    TrainingBackend,
    TurnStore,
)
from backends.registry import Backends
from backends.turns import BlobTurnStore
from core.models import BlobRef, FineTuneSpec, Hyperparameters, ModelRef, ProvisioningState
from core.naming import APP_TAG, CREATED_BY_TAG
from core.settings import Settings
from storage.blob_store import BlobDatasetStore
from testing.fakes import FakeAzure
from testing.polling import wait_for

PS = ProvisioningState
OURS = {CREATED_BY_TAG: APP_TAG}
NO_STORAGE = "the backend protocol tests"
BACKENDS = ["local", "azureml", "fake"]


# --------------------------------------------------------------------------- implementations


@pytest.fixture(scope="module")
def local_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    run_dir = tmp_path_factory.mktemp("protocols-run")
    built = registry.build(Settings(BACKEND="local", LOCAL_RUN_DIR=str(run_dir)), storage=NO_STORAGE)
    yield built
    stop_all = getattr(built.serving, "stop_all", None)  # the local endpoint fronts and servers
    if callable(stop_all):
        stop_all()


@pytest.fixture(scope="module")
def azureml_backends(aml_module_world: World) -> Backends:
    """The Azure ML backend as function_app builds it, on a fresh emulator world for this module."""
    return registry.build(Settings(), storage=NO_STORAGE)


@pytest.fixture(scope="module")
def fake_backends() -> Backends:
    """The in-memory Azure the replay tests run the real activities against: it must keep the
    same promises, or the replay tests prove things about a backend that does not exist."""
    return FakeAzure().backends()


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest) -> Backends:
    built: Backends = request.getfixturevalue(f"{request.param}_backends")
    return built


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_every_backend_implements_its_protocols(backends: Backends) -> None:
    assert isinstance(backends.training, TrainingBackend)
    assert isinstance(backends.serving, ServingBackend)
    assert isinstance(backends.connections, ConnectionStore)
    assert isinstance(backends.preflight, PreflightBackend)


# --------------------------------------------------------------------------- TrainingBackend


def finetune_spec(job_name: str) -> FineTuneSpec:
    blob = "azureml://datastores/datasets/paths/chats/_splits/protocols"
    return FineTuneSpec(
        job_name=job_name,
        base_model_name="Phi-3-mini-4k-instruct",
        base_model_version="1",
        model_registry="azureml",
        task="ChatCompletion",
        training_data=f"{blob}/train.jsonl",
        validation_data=f"{blob}/validation.jsonl",
        hyperparameters=Hyperparameters(learning_rate=0.0001, num_train_epochs=1),
        instance_type="Standard_NC24ads_A100_v4",
        output_model_prefix="phi3-mini-ft",
        tags={**OURS, "run_id": job_name},
    )


def test_submit_is_idempotent_by_job_name_and_cancel_is_too(backends: Backends) -> None:
    job = f"ft-{uuid.uuid4().hex[:16]}-finetune"
    training = backends.training

    assert training.submit_finetune(finetune_spec(job)) == job
    assert training.submit_finetune(finetune_spec(job)) == job, "a second submit returns the same job"
    assert training.get_job(job).name == job

    training.cancel_job(job)
    training.cancel_job(job)  # cancel again (canceling, canceled or already ended): no error
    assert training.get_job(job).name == job


def test_delete_of_a_missing_model_is_no_error(backends: Backends) -> None:
    backends.training.delete_model(ModelRef(name=unique("no-such-model"), version="1"))


def test_list_models_of_nobody_is_empty(backends: Backends) -> None:
    assert backends.training.list_models(unique("nobody")) == []


# --------------------------------------------------------------------------- ServingBackend


def test_a_missing_endpoint_reads_as_not_found_and_deleting_it_is_no_error(backends: Backends) -> None:
    serving = backends.serving
    name = unique("phi3-none")

    info = serving.get_endpoint(name)
    assert (info.name, info.state, info.deployments, info.traffic) == (name, PS.NOT_FOUND, [], {})
    assert serving.get_deployment_state(name, "blue") is PS.NOT_FOUND
    assert serving.list_deployments(name) == []
    serving.delete_deployment(name, "blue")
    serving.delete_endpoint(name)


def test_create_endpoint_is_create_if_missing(backends: Backends) -> None:
    serving = backends.serving
    name = unique("phi3-ep")

    serving.begin_create_endpoint(name, {**OURS, "first": "yes"})
    serving.begin_create_endpoint(name, {**OURS, "second": "yes"})  # exists: nothing changes
    info = wait_for(lambda: serving.get_endpoint(name), lambda i: i.state is PS.SUCCEEDED, f"endpoint {name}")
    assert info.tags == {**OURS, "first": "yes"}
    assert name in [e.name for e in serving.list_endpoints()]

    serving.update_endpoint_tags(name, {"extra": "1"})
    assert serving.get_endpoint(name).tags == {**OURS, "first": "yes", "extra": "1"}, "other tags are kept"

    serving.delete_deployment(name, "blue")  # a deployment the endpoint never had: no error
    serving.delete_endpoint(name)
    serving.delete_endpoint(name)  # deleting (or gone) already: no error
    assert serving.get_endpoint(name).state in {PS.DELETING, PS.NOT_FOUND}


# --------------------------------------------------------------------------- ConnectionStore


def test_a_missing_connection_does_not_exist_and_deleting_it_is_no_error(backends: Backends) -> None:
    name = unique("conn")
    assert backends.connections.connection_exists(name) is False
    backends.connections.delete_connection(name)
    assert backends.connections.connection_exists(name) is False


# --------------------------------------------------------------------------- DatasetStore


@pytest.fixture(scope="module")
def container(blob_service: BlobServiceClient) -> Iterator[str]:
    name = f"protocols-{uuid.uuid4().hex[:8]}"
    blob_service.create_container(name)
    yield name
    blob_service.delete_container(name)


@pytest.fixture(scope="module", params=["blob", "fake"])
def datasets(request: pytest.FixtureRequest) -> DatasetStore:
    """The blob store on Azurite, and the replay tests' in-memory one."""
    if request.param == "fake":
        return FakeAzure()
    return BlobDatasetStore(request.getfixturevalue("blob_service"))


def upload(store: DatasetStore, container: str, name: str, data: bytes, tmp_path: Path) -> BlobRef:
    src = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    src.write_bytes(data)
    return store.upload(src, BlobRef(container=container, name=name))


def test_the_store_implements_the_protocol(datasets: DatasetStore) -> None:
    assert isinstance(datasets, DatasetStore)


def test_upload_then_describe_agree_on_etag_and_url(
    datasets: DatasetStore, container: str, tmp_path: Path
) -> None:
    name = f"{unique('d')}/train set.jsonl"
    uploaded = upload(datasets, container, name, b'{"messages": []}\n', tmp_path)
    described = datasets.describe(BlobRef(container=container, name=name))

    assert uploaded.etag and described.etag == uploaded.etag
    assert described.url == uploaded.url
    assert described.url is not None and described.url.startswith(datasets.account_url + "/")
    assert "?" not in described.url


def test_describe_and_download_of_a_missing_blob_raise_file_not_found(
    datasets: DatasetStore, container: str, tmp_path: Path
) -> None:
    missing = BlobRef(container=container, name=f"{unique('nope')}.jsonl")
    with pytest.raises(FileNotFoundError):
        datasets.describe(missing)
    with pytest.raises(FileNotFoundError):
        datasets.describe(BlobRef(container=unique("no-such-container"), name="x.jsonl"))
    dest = tmp_path / "out.jsonl"
    with pytest.raises(FileNotFoundError):
        datasets.download(missing, dest)
    assert not dest.exists()


def test_download_of_the_described_version_gives_its_bytes(
    datasets: DatasetStore, container: str, tmp_path: Path
) -> None:
    name = f"{unique('d')}.jsonl"
    ref = upload(datasets, container, name, b"v1\n", tmp_path)
    assert ref.etag is not None
    for etag in (ref.etag, ref.etag.strip('"')):  # quoted as returned, or as an event carries it
        dest = tmp_path / f"{uuid.uuid4().hex}.jsonl"
        datasets.download(ref.model_copy(update={"etag": etag}), dest)
        assert dest.read_bytes() == b"v1\n"


def test_a_changed_blob_raises_the_seams_blob_changed_error(
    datasets: DatasetStore, container: str, tmp_path: Path
) -> None:
    name = f"{unique('d')}.jsonl"
    old = upload(datasets, container, name, b"v1\n", tmp_path)
    upload(datasets, container, name, b"v2\n", tmp_path)
    dest = tmp_path / "stale.jsonl"

    with pytest.raises(BlobChangedError) as raised:
        datasets.download(old, dest)

    assert isinstance(raised.value, BlobStoreError)
    assert (raised.value.container, raised.value.name) == (container, name)
    assert not dest.exists(), "nothing is left behind"


def test_open_stream_gives_the_version_s_bytes_and_the_seam_s_errors(
    datasets: DatasetStore, container: str, tmp_path: Path
) -> None:
    name = f"{unique('d')}.jsonl"
    data = b"".join(b'{"n": %d}\n' % i for i in range(5000))
    ref = upload(datasets, container, name, data, tmp_path)
    assert b"".join(datasets.open_stream(ref)) == data
    assert b"".join(datasets.open_stream(ref.model_copy(update={"etag": None}))) == data

    with pytest.raises(FileNotFoundError):
        datasets.open_stream(BlobRef(container=container, name=f"{unique('nope')}.jsonl"))
    upload(datasets, container, name, b"v2\n", tmp_path)
    with pytest.raises(BlobChangedError):
        b"".join(datasets.open_stream(ref))


def test_upload_chunks_overwrites_with_the_chunks_bytes_and_a_new_etag(
    datasets: DatasetStore, container: str, tmp_path: Path
) -> None:
    name = f"{unique('d')}/chunked.jsonl"
    blob = BlobRef(container=container, name=name)
    old = upload(datasets, container, name, b"old\n", tmp_path)
    data = [b'{"n": %d}\n' % i for i in range(3000)]
    uploaded = datasets.upload_chunks(iter(data), blob)

    assert uploaded.etag and uploaded.etag != old.etag
    assert datasets.describe(blob) == uploaded  # the etag and URL of the blob now there
    assert b"".join(datasets.open_stream(uploaded)) == b"".join(data)
    assert b"".join(datasets.open_stream(datasets.upload_chunks(iter(()), blob))) == b""


# --------------------------------------------------------------------------- TurnStore


@pytest.fixture(scope="module", params=["blob", "fake"])
def turns(request: pytest.FixtureRequest) -> TurnStore:
    """The blob turn store on Azurite, and the replay tests' in-memory one."""
    if request.param == "fake":
        return FakeAzure()
    return BlobTurnStore(request.getfixturevalue("blob_service"), request.getfixturevalue("container"))


def test_the_turn_store_implements_the_protocol(turns: TurnStore) -> None:
    assert isinstance(turns, TurnStore)


def test_take_renew_and_give_back(turns: TurnStore) -> None:
    endpoint = unique("phi3-turn")
    assert turns.current(endpoint) is None

    first = turns.take(endpoint, "run-a", 600)
    assert first.granted and first.holder == "run-a"
    refused = turns.take(endpoint, "run-b", 600)
    assert not refused.granted and refused.holder == "run-a"
    renewed = turns.take(endpoint, "run-a", 900)
    assert renewed.granted and renewed.expires_at > first.expires_at

    assert turns.give_back(endpoint, "run-b") is False, "only the holder gives it back"
    current = turns.current(endpoint)
    assert current is not None and current.holder == "run-a"
    assert turns.give_back(endpoint, "run-a") is True
    assert turns.current(endpoint) is None
    assert turns.give_back(endpoint, "run-a") is False, "a second give_back is no error"
    assert turns.take(endpoint, "run-b", 600).granted


def test_an_expired_turn_goes_to_the_next_asker(turns: TurnStore) -> None:
    endpoint = unique("phi3-turn")
    assert turns.take(endpoint, "run-a", 0).granted  # a turn of 0 s has expired by the next ask
    answer = turns.take(endpoint, "run-b", 600)
    assert answer.granted and answer.holder == "run-b"
    assert turns.give_back(endpoint, "run-a") is False
