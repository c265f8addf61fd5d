"""Naming, settings, redaction and the shipped config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from core import redact
from core.models import BlobRef, Hyperparameters, Overrides
from core.naming import instance_id, is_dataset_blob, lineage_tags, pick_deployments, split_blobs
from core.payload import promptflow_payload
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BLOB = BlobRef(container="datasets", name="chats/a.jsonl", etag='"0x8DC1"')


def test_instance_id_is_deterministic_and_version_specific():
    assert instance_id(BLOB) == instance_id(BLOB.model_copy())
    assert instance_id(BLOB).startswith("ft-") and len(instance_id(BLOB)) == 19
    assert instance_id(BLOB) != instance_id(BLOB.model_copy(update={"etag": '"0x8DC2"'}))
    assert instance_id(BLOB) != instance_id(BLOB.model_copy(update={"name": "chats/b.jsonl"}))
    val = BlobRef(container="datasets", name="v.jsonl", etag='"0x1"')
    assert instance_id(BLOB) != instance_id(BLOB, val)
    # Default overrides are no overrides: the blob trigger and a bare POST agree.
    assert instance_id(BLOB, None, Overrides()) == instance_id(BLOB)
    tuned = Overrides(hyperparameters={"learning_rate": 0.001})
    assert instance_id(BLOB, None, tuned) != instance_id(BLOB)
    with pytest.raises(ValueError, match="ETag"):
        instance_id(BLOB.model_copy(update={"etag": None}))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jsonl", True),
        ("deep/dir/A.JSONL", True),
        ("runs/a.jsonl", True),  # only the pipeline's own folder names are special
        ("_splits/ft-1/train.jsonl", False),
        ("x/_splits/ft-1/train.jsonl", False),
        ("x/reports/ft-1/a.jsonl", False),
        ("a.json", False),
        ("a.jsonl.gz", False),
        ("a.txt", False),
    ],
)
def test_is_dataset_blob(name, expected):
    assert is_dataset_blob(name) is expected


def test_split_blobs_sit_next_to_the_dataset_and_are_ignored_by_the_trigger():
    train, val = split_blobs(BLOB, "ft-1")
    assert (
        train.name == "chats/_splits/ft-1/train.jsonl" and val.name == "chats/_splits/ft-1/validation.jsonl"
    )
    top, _ = split_blobs(BLOB.model_copy(update={"name": "a.jsonl"}), "ft-1")
    assert top.name == "_splits/ft-1/train.jsonl"
    assert not is_dataset_blob(train.name) and not is_dataset_blob(top.name)


@pytest.mark.parametrize(
    ("traffic", "new", "live"),
    [
        ({}, "blue-0123456789ab", None),
        ({"blue-aaaa": 100}, "green-0123456789ab", "blue-aaaa"),
        ({"green-aaaa": 100}, "blue-0123456789ab", "green-aaaa"),
        ({"green-aaaa": 0, "blue-bbbb": 100}, "green-0123456789ab", "blue-bbbb"),
        ({"blue-aaaa": 0}, "blue-0123456789ab", None),
    ],
)
def test_pick_deployments_alternates_colours(traffic, new, live):
    assert pick_deployments(traffic, "ft-0123456789abcdef") == (new, live)
    assert len(new) <= 32


def test_lineage_tags():
    tags = lineage_tags("ft-1", BLOB, "ft-1-finetune")
    assert tags == {
        "created-by": "phi3-finetune-pipeline",
        "instance-id": "ft-1",
        "dataset-blob": "datasets/chats/a.jsonl",
        "dataset-etag": '"0x8DC1"',
        "job-name": "ft-1-finetune",
    }


def test_promptflow_payload_matches_the_seed_tool():
    assert promptflow_payload("hi") == {
        "input_data": {
            "input_string": [{"role": "user", "content": "hi"}],
            "parameters": {"temperature": 0.7, "max_new_tokens": 128},
        }
    }


def test_hyperparameters_as_azure_strings():
    hp = Hyperparameters(learning_rate=0.00002, lr_scheduler_type="cosine", num_train_epochs=3)
    assert hp.as_strings() == {
        "learning_rate": "0.00002",
        "lr_scheduler_type": "cosine",
        "num_train_epochs": "3",
        "per_device_train_batch_size": "1",
    }


def test_redact_scrubs_known_secrets_and_credential_shapes():
    redact.remember("s3cr3t-value-123")
    text = (
        "failed with s3cr3t-value-123; AccountKey=abcDEF123+/==;EndpointSuffix=x "
        "url?sv=2024&sig=ABCdef%2B123&se=1 Authorization: Bearer eyJ0eXAi.abc "
        '{"key": "zzzzzzzz"} api_key=qqqqqqq'
    )
    clean = redact.scrub(text)
    for secret in ("s3cr3t-value-123", "abcDEF123", "ABCdef%2B123", "eyJ0eXAi", "zzzzzzzz", "qqqqqqq"):
        assert secret not in clean
    assert "AccountKey=***" in clean and "Bearer ***" in clean


# -- settings ---------------------------------------------------------------------------------------


def test_azure_backend_requires_workspace_settings():
    with pytest.raises(
        ValidationError, match="AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE"
    ):
        Settings(BACKEND="azureml")


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("BACKEND", "local")
    monkeypatch.setenv("LEARNING_RATE", "0.0001")
    monkeypatch.setenv("BASE_MODEL_VERSION", "")  # empty app setting = unset
    monkeypatch.setenv("JOB_DEADLINE_HOURS", "2")
    cfg = Settings().run_config()
    assert cfg.hyperparameters.learning_rate == 0.0001
    assert cfg.base_model_version is None
    assert cfg.job_poll.deadline_s == 7200


def test_overrides_win_over_settings():
    cfg = Settings(BACKEND="local").run_config(
        Overrides.model_validate(
            {
                "hyperparameters": {"num_train_epochs": 3},
                "model": {"version": "15"},
                "endpoint": {"name": "my-endpoint", "instance_count": 2},
            }
        )
    )
    assert cfg.hyperparameters.num_train_epochs == 3 and cfg.hyperparameters.learning_rate == 0.00002
    assert cfg.base_model_version == "15"
    assert (cfg.endpoint_name, cfg.serving_instance_count) == ("my-endpoint", 2)
    assert cfg.serving_instance_type == "Standard_NC24ads_A100_v4"


def test_bad_setting_value_names_the_setting(monkeypatch):
    monkeypatch.setenv("BACKEND", "local")
    monkeypatch.setenv("LR_SCHEDULER_TYPE", "sawtooth")
    with pytest.raises(ValidationError, match="lr_scheduler_type"):
        Settings().run_config()


def test_sample_settings_list_every_setting_and_no_secret():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    runtime = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage"}
    assert set(values) - runtime == set(Settings.model_fields)
    for name, value in values.items():
        assert "AccountKey" not in value and "SharedAccessSignature" not in value, name


def test_host_json_task_hub_from_setting_and_bundle_v4():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["durableTask"]["hubName"] == "%TASK_HUB_NAME%"
    assert host["extensionBundle"]["version"].startswith("[4.")
    assert host["functionTimeout"] == "00:10:00"


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    for name in Settings.model_fields:
        short = name.split("__", 1)[1] if "__" in name else None
        assert f"`{name}`" in table or (short and f"__{short}`" in table), (
            f"{name} missing from README settings"
        )
