"""The offline training backend, for real: Azurite, background job processes, a tiny Phi-3 trained
on CPU, MLflow tracking and registry in a temporary run directory. No mocks.

Waiting on a job is a bounded poll of `get_job` (a real background process does the work).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.models import BlobRef, FineTuneSpec, Hyperparameters, JobInfo, JobState
from core.settings import Settings
from localml.paths import RunPaths
from localml.training import LocalTraining, generate, load_model
from testing.azurite_fixtures import Azurite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0
POLL_S = 0.2
TRAIN_STEPS = 60

TIPS = {
    "python": "write small scripts, read the docs and test your code often",
    "gardening": "water the plants early, use good soil and give them sunlight",
    "bread": "use strong flour, knead the dough well and let it rise slowly",
    "cycling": "check the tyres, ride a little every day and keep a steady pace",
    "chess": "study openings, solve puzzles daily and review your games",
    "coffee": "grind fresh beans, weigh the water and brew at the right temperature",
}
VERBS = ["start with", "learn", "improve at", "enjoy"]


def conversations(n: int, seed: int = 7) -> list[dict[str, object]]:
    """`n` ultrachat_200k-shaped rows; about a third have a second exchange."""
    rnd = random.Random(seed)
    rows: list[dict[str, object]] = []
    topics = sorted(TIPS)
    for i in range(n):
        topic, verb = rnd.choice(topics), rnd.choice(VERBS)
        prompt = f"How can I {verb} {topic}?"
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": f"To {verb} {topic}, {TIPS[topic]}."},
        ]
        if i % 3 == 0:
            other = rnd.choice(topics)
            messages += [
                {"role": "user", "content": f"And what about {other}?"},
                {"role": "assistant", "content": f"For {other}, {TIPS[other]}."},
            ]
        rows.append({"prompt": prompt, "prompt_id": f"{i:064x}", "messages": messages})
    return rows


TRAINING_WORDS = {
    w.strip(".,?").lower()
    for row in conversations(60)
    for m in row["messages"]  # type: ignore[union-attr]
    for w in m["content"].split()  # type: ignore[index]
}


@dataclass(frozen=True)
class Dataset:
    train: BlobRef
    validation: BlobRef


# What the session-scoped fixtures below built, by (fixture, Azurite location). A test module that
# imports these fixtures (test_local_housekeeping.py) gets fixture definitions of its own, which
# pytest runs once more: they find the result here instead of uploading or training again.
_SESSION: dict[tuple[str, str], Any] = {}


@pytest.fixture(scope="session")
def dataset(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """60 conversations, split 48/12, uploaded once per session to a fresh Azurite container (which
    goes away with the session's Azurite)."""
    from storage.blob_store import BlobDatasetStore

    key = ("dataset", str(azurite.location))
    if key in _SESSION:
        return _SESSION[key]
    rows = conversations(60)
    folder = tmp_path_factory.mktemp("dataset")
    container = f"test-{uuid.uuid4().hex[:16]}"
    with BlobDatasetStore.from_connection_string(azurite.connection_string) as store:
        store.service.create_container(container)
        refs = []
        for name, part in (("train", rows[:48]), ("validation", rows[48:])):
            path = folder / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in part))
            refs.append(store.upload(path, BlobRef(container=container, name=f"chats/{name}.jsonl")))
    _SESSION[key] = Dataset(train=refs[0], validation=refs[1])
    return _SESSION[key]


def make_settings(azurite: Azurite, run_dir: Path, max_steps: int) -> Settings:
    return Settings(
        BACKEND="local",
        DatasetsStorage=azurite.connection_string,
        LOCAL_RUN_DIR=str(run_dir),
        LOCAL_MAX_STEPS=max_steps,
    )


def make_spec(backend: LocalTraining, data: Dataset, job_name: str, **hyper: object) -> FineTuneSpec:
    return FineTuneSpec(
        job_name=job_name,
        base_model_name="Phi-3-mini-4k-instruct",
        base_model_version=None,
        model_registry="azureml",
        task="ChatCompletion",
        training_data=backend.data_uri(data.train),
        validation_data=backend.data_uri(data.validation),
        hyperparameters=Hyperparameters.model_validate(hyper),
        instance_type="cpu",
        output_model_prefix="phi3-mini-ft",
        tags={"created-by": "tests", "instance-id": "ft-test", "dataset-blob": data.train.path},
    )


def log_tail(backend: LocalTraining, job_name: str) -> str:
    try:
        return backend.log_path(job_name).read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def wait_for(backend: LocalTraining, job_name: str, done: Callable[[JobInfo], bool], what: str) -> JobInfo:
    """Poll `get_job` until `done(info)`, at most DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        info = backend.get_job(job_name)
        if done(info):
            return info
        if time.monotonic() > deadline:
            pytest.fail(
                f"job {job_name} not {what} after {DEADLINE_S:.0f} s: {info}\n{log_tail(backend, job_name)}"
            )
        time.sleep(POLL_S)


def process_of(backend: LocalTraining, job_name: str) -> int:
    return int(json.loads((backend.job_dir(job_name) / "process.json").read_text())["pid"])


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + 30.0
    while running(pid):
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} still running 30 s after its job ended")
        time.sleep(POLL_S)


def training_started(info: JobInfo) -> bool:
    return info.state.terminal or info.metrics.get("step", 0) >= 1


@pytest.fixture
def long_job_backend(azurite: Azurite, tmp_path: Path) -> Iterator[LocalTraining]:
    """A backend whose jobs train for minutes (so they can be canceled / killed while running)."""
    backend = LocalTraining(make_settings(azurite, tmp_path, max_steps=100_000))
    yield backend
    for job_dir in backend.paths.jobs_dir.glob("*"):
        backend.cancel_job(job_dir.name)


# ---------------------------------------------------------------------------- a completed job


@dataclass(frozen=True)
class Trained:
    backend: LocalTraining
    spec: FineTuneSpec
    info: JobInfo
    wall_s: float


@pytest.fixture(scope="session")
def trained(azurite: Azurite, dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One job trained to completion per session, in its own run dir. Shared: tests register models
    under names of their own and leave the job's MLflow run alone."""
    key = ("trained", str(azurite.location))
    if key in _SESSION:
        return _SESSION[key]
    backend = LocalTraining(make_settings(azurite, tmp_path_factory.mktemp("run"), TRAIN_STEPS))
    spec = make_spec(backend, dataset, "ft-test-finetune", num_train_epochs=3, per_device_train_batch_size=2)
    started = time.monotonic()
    assert backend.submit_finetune(spec) == spec.job_name
    submitted = time.monotonic() - started
    assert submitted < 2.0, f"submit_finetune must not wait for training ({submitted:.1f} s)"
    info = wait_for(backend, spec.job_name, lambda i: i.state.terminal, "finished")
    _SESSION[key] = Trained(backend, spec, info, time.monotonic() - started)
    return _SESSION[key]


def test_job_completes_and_reports_progress(trained: Trained) -> None:
    info = trained.info
    assert info.state is JobState.COMPLETED, f"{info}\n{log_tail(trained.backend, trained.spec.job_name)}"
    assert info.raw_status == "Completed"
    assert info.error is None
    assert info.studio_url is not None
    assert info.studio_url.startswith("file://")
    assert info.studio_url.endswith("/log.txt")
    # 48 conversations, batch 2, 3 epochs = 72 batches, capped by LOCAL_MAX_STEPS.
    assert info.metrics["step"] == info.metrics["total_steps"] == TRAIN_STEPS
    status = trained.backend.status(trained.spec.job_name)
    assert status["model_uri"].startswith("models:/")
    assert status["run_id"]
    # It wrote Completed as its last act; exiting follows.
    wait_until_gone(process_of(trained.backend, trained.spec.job_name))


def test_losses_are_logged_to_mlflow(trained: Trained) -> None:
    from mlflow import MlflowClient

    paths = RunPaths.at(trained.backend.settings.LOCAL_RUN_DIR)
    client = MlflowClient(tracking_uri=paths.mlflow_uri)
    run_id = trained.backend.status(trained.spec.job_name)["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == trained.spec.output_model_prefix
    assert experiment.artifact_location.startswith(paths.mlflow_artifacts.as_uri())
    for key, value in trained.spec.tags.items():
        assert run.data.tags[key] == value
    assert run.data.tags["job_name"] == trained.spec.job_name
    assert run.data.params["lr_scheduler_type"] == "linear"
    assert run.data.params["per_device_train_batch_size"] == "2"

    train = sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)
    evals = sorted(client.get_metric_history(run_id, "eval_loss"), key=lambda m: m.step)
    assert len(train) >= 5
    assert train[-1].step == TRAIN_STEPS
    assert train[-1].value < train[0].value * 0.7, [round(m.value, 3) for m in train]
    assert len(evals) >= 2
    assert evals[0].step == 0
    assert evals[-1].value < evals[0].value


def test_register_model_is_idempotent_and_tagged(trained: Trained) -> None:
    from mlflow import MlflowClient

    backend, job = trained.backend, trained.spec.job_name
    tags = {"dataset-etag": '"0x8DC"', "instance-id": "ft-test"}
    first = backend.register_model(job, "phi3-local-ft", tags)
    second = backend.register_model(job, "phi3-local-ft", tags)
    assert first == second
    assert first.version == "1"

    client = MlflowClient(tracking_uri=backend.paths.mlflow_uri, registry_uri=backend.paths.mlflow_uri)
    versions = client.search_model_versions("name = 'phi3-local-ft'")
    assert [str(v.version) for v in versions] == ["1"]
    version_tags = versions[0].tags
    assert version_tags["dataset-etag"] == '"0x8DC"'
    assert version_tags["instance-id"] == "ft-test"
    assert version_tags["job_name"] == job


def test_registered_model_loads_and_answers(trained: Trained) -> None:
    model_ref = trained.backend.register_model(trained.spec.job_name, "phi3-local-ft", {})
    model, tokenizer = load_model(model_ref, trained.backend.settings)
    question = [{"role": "user", "content": "How can I learn chess?"}]

    greedy = generate(model, tokenizer, question, temperature=0.0, max_new_tokens=40)
    assert greedy, "greedy generation returned nothing"
    assert "<|" not in greedy
    words = {w.strip(".,?").lower() for w in greedy.split()}
    assert words & TRAINING_WORDS, greedy
    assert generate(model, tokenizer, question, temperature=0.0, max_new_tokens=40) == greedy

    sampled = generate(model, tokenizer, question, temperature=0.7, max_new_tokens=40)
    assert isinstance(sampled, str)
    assert len(sampled) <= 40 * 20


def test_register_before_completion_raises(long_job_backend: LocalTraining, dataset: Dataset) -> None:
    backend = long_job_backend
    spec = make_spec(backend, dataset, "ft-early-finetune", num_train_epochs=100)
    backend.submit_finetune(spec)
    with pytest.raises(RuntimeError, match="not Completed"):
        backend.register_model(spec.job_name, "phi3-local-ft", {})


# ---------------------------------------------------------------------------- lifecycle


def test_submit_twice_starts_one_job(long_job_backend: LocalTraining, dataset: Dataset) -> None:
    backend = long_job_backend
    spec = make_spec(backend, dataset, "ft-twice-finetune", num_train_epochs=100)
    assert backend.submit_finetune(spec) == spec.job_name
    pid = process_of(backend, spec.job_name)
    assert backend.submit_finetune(spec) == spec.job_name
    assert process_of(backend, spec.job_name) == pid
    assert [p.name for p in backend.paths.jobs_dir.iterdir()] == [spec.job_name]

    children = subprocess.run(
        ["pgrep", "-f", f"localml.train_job {backend.job_dir(spec.job_name)}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert children == [str(pid)]


def test_cancel_running_job(long_job_backend: LocalTraining, dataset: Dataset) -> None:
    from mlflow import MlflowClient

    backend = long_job_backend
    spec = make_spec(backend, dataset, "ft-cancel-finetune", num_train_epochs=100)
    backend.submit_finetune(spec)
    info = wait_for(backend, spec.job_name, training_started, "training")
    assert info.state is JobState.RUNNING, f"{info}\n{log_tail(backend, spec.job_name)}"
    pid = process_of(backend, spec.job_name)

    backend.cancel_job(spec.job_name)
    assert not running(pid)
    info = backend.get_job(spec.job_name)
    assert info.state is JobState.CANCELED
    assert info.raw_status == "Canceled"
    backend.cancel_job(spec.job_name)  # no-op once terminal
    backend.cancel_job("no-such-job")  # no-op when unknown
    assert backend.get_job(spec.job_name).state is JobState.CANCELED

    run_id = backend.status(spec.job_name)["run_id"]
    assert MlflowClient(tracking_uri=backend.paths.mlflow_uri).get_run(run_id).info.status == "KILLED"


def test_killed_process_is_reported_failed(long_job_backend: LocalTraining, dataset: Dataset) -> None:
    backend = long_job_backend
    spec = make_spec(backend, dataset, "ft-killed-finetune", num_train_epochs=100)
    backend.submit_finetune(spec)
    wait_for(backend, spec.job_name, lambda i: i.state is not JobState.QUEUED, "running")
    pid = process_of(backend, spec.job_name)
    os.killpg(pid, signal.SIGKILL)

    info = wait_for(backend, spec.job_name, lambda i: i.state.terminal, "failed")
    assert info.state is JobState.FAILED
    assert info.raw_status == "Failed"
    assert info.error == f"training process exited unexpectedly; see {backend.log_path(spec.job_name)}"
    assert not running(pid)


def test_unreadable_data_fails_the_job(azurite: Azurite, dataset: Dataset, tmp_path: Path) -> None:
    backend = LocalTraining(make_settings(azurite, tmp_path, 10))
    assert dataset.train.url is not None
    missing = BlobRef(
        container=dataset.train.container,
        name="chats/missing.jsonl",
        url=dataset.train.url.replace("train.jsonl", "missing.jsonl"),
    )
    spec = make_spec(backend, dataset, "ft-missing-finetune").model_copy(
        update={"training_data": backend.data_uri(missing)}
    )
    backend.submit_finetune(spec)
    info = wait_for(backend, spec.job_name, lambda i: i.state.terminal, "finished")
    assert info.state is JobState.FAILED
    assert info.error is not None
    assert "blob not found" in info.error
    assert "\n" not in info.error


def test_data_uri_needs_a_url(tmp_path: Path) -> None:
    backend = LocalTraining(Settings(BACKEND="local", LOCAL_RUN_DIR=str(tmp_path)))
    blob = BlobRef(
        container="datasets", name="a.jsonl", url="http://127.0.0.1:10000/devstoreaccount1/datasets/a.jsonl"
    )
    assert backend.data_uri(blob) == blob.url
    with pytest.raises(ValueError, match="no URL"):
        backend.data_uri(BlobRef(container="datasets", name="a.jsonl"))


def test_unknown_job(tmp_path: Path) -> None:
    backend = LocalTraining(Settings(BACKEND="local", LOCAL_RUN_DIR=str(tmp_path)))
    with pytest.raises(LookupError):
        backend.get_job("no-such-job")


def test_backend_module_imports_no_ml_stack(tmp_path: Path) -> None:
    code = (
        "import sys, localml.training\n"
        "from core.settings import Settings\n"
        "localml.training.LocalTraining(Settings(BACKEND='local', LOCAL_RUN_DIR=sys.argv[1]))\n"
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, check=True)


# ---------------------------------------------------------------------------- tokenizer + data


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    from localml.tokenizer import build_tokenizer, conversation_texts

    return build_tokenizer(conversation_texts(conversations(60)))


def test_tokenizer_has_phi3_special_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    specials = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    for token in specials:
        assert token in tokenizer.all_special_tokens
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, token
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert 300 < len(tokenizer) <= 2000
    text = "Bake bread:\n  knead, rise, bake. Ünïcode ✓"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_phi3_format(tokenizer: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How can I learn chess?"},
        {"role": "assistant", "content": "Study openings."},
        {"role": "user", "content": "And coffee?"},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|system|>\nBe brief.<|end|>\n"
        "<|user|>\nHow can I learn chess?<|end|>\n"
        "<|assistant|>\nStudy openings.<|end|>\n"
        "<|user|>\nAnd coffee?<|end|>\n"
        "<|assistant|>\n"
    )
    assert tokenizer.apply_chat_template(messages[1:3], tokenize=False) == (
        "<|user|>\nHow can I learn chess?<|end|>\n<|assistant|>\nStudy openings.<|end|>\n<|endoftext|>"
    )


def test_examples_train_on_assistant_turns_only(tokenizer: PreTrainedTokenizerFast) -> None:
    from localml.tiny_phi3 import IGNORE_INDEX, encode_conversation

    row = conversations(60)[0]
    messages = row["messages"]
    assert isinstance(messages, list)
    example = encode_conversation(tokenizer, messages)
    assert example is not None
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert example.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]

    trained = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]
    assert all(label in (t, IGNORE_INDEX) for t, label in zip(example.input_ids, example.labels, strict=True))
    expected = "".join(m["content"] + "<|end|>" for m in messages if m["role"] == "assistant")
    assert tokenizer.decode(trained) == expected

    assert encode_conversation(tokenizer, [{"role": "user", "content": "only a question"}]) is None
    long = encode_conversation(
        tokenizer,
        [{"role": "user", "content": "chess " * 400}, {"role": "assistant", "content": "bread " * 400}],
    )
    assert long is not None
    # user content cut to 256 // 4 tokens, assistant content to 256 // 2 (+ its <|end|>)
    assert len(long.input_ids) <= 256
    assert long.trained_tokens == 128 + 1
    assert tokenizer.decode(long.input_ids).startswith("<|user|>\nchess chess")
