"""scripts/teardown.py and core/costs.py against an in-memory workspace (no Azure, no local stack)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backends.registry import Backends
from core import costs
from core.models import BlobRef, DeploymentInfo, EndpointInfo, ModelRef, ProvisioningState
from core.naming import APP_TAG, CREATED_BY_TAG
from core.settings import Settings
from scripts import teardown

OURS = {CREATED_BY_TAG: APP_TAG, "instance-id": "ft-0123456789abcdef"}
SUCCEEDED = ProvisioningState.SUCCEEDED


def deployment(name: str, instance_type: str = "Standard_NC6s_v3", count: int = 1) -> DeploymentInfo:
    return DeploymentInfo(name=name, instance_type=instance_type, instance_count=count, state=SUCCEEDED)


class FakeWorkspace:
    """Just the protocol methods teardown uses: list/delete endpoints, connection, model versions."""

    def __init__(
        self,
        endpoints: dict[str, tuple[dict[str, str], list[DeploymentInfo]]] | None = None,
        connections: set[str] | None = None,
        models: list[tuple[ModelRef, dict[str, str]]] | None = None,
        fail: set[str] | None = None,
    ) -> None:
        self.endpoints = dict(endpoints or {})
        self.connections = set(connections or ())
        self.models = list(models or [])
        self.fail = set(fail or ())  # names (endpoint, connection, "model:version") whose delete raises
        self.deleted: list[tuple[str, str]] = []

    def _delete(self, kind: str, name: str) -> None:
        if name in self.fail:
            raise RuntimeError(f"{kind} {name} is locked")
        self.deleted.append((kind, name))

    # ServingBackend
    def list_endpoints(self) -> list[EndpointInfo]:
        return [
            EndpointInfo(name=n, state=SUCCEEDED, tags=tags, deployments=[d.name for d in deps])
            for n, (tags, deps) in self.endpoints.items()
        ]

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        return list(self.endpoints[endpoint][1]) if endpoint in self.endpoints else []

    def delete_endpoint(self, name: str) -> None:
        self._delete("endpoint", name)
        self.endpoints.pop(name, None)

    # ConnectionStore
    def connection_exists(self, name: str) -> bool:
        return name in self.connections

    def delete_connection(self, name: str) -> None:
        self._delete("connection", name)
        self.connections.discard(name)

    # TrainingBackend
    def list_models(self, created_by: str) -> list[tuple[ModelRef, dict[str, str]]]:
        return [(ref, tags) for ref, tags in self.models if tags.get(CREATED_BY_TAG) == created_by]

    def delete_model(self, model: ModelRef) -> None:
        self._delete("model", f"{model.name}:{model.version}")
        self.models = [(ref, tags) for ref, tags in self.models if ref != model]


def backends(fake: FakeWorkspace) -> Backends:
    return Backends(training=fake, serving=fake, connections=fake, datasets=fake, preflight=fake, turns=fake)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich sizes its tables to the terminal (COLUMNS when there is none): one width for every
    runner, wide enough that no cell the tests read is wrapped."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def azure() -> Settings:
    return Settings(
        BACKEND="azureml",
        AZURE_SUBSCRIPTION_ID="00000000-0000-0000-0000-000000000000",
        AZURE_RESOURCE_GROUP="rg-phi3",
        AZUREML_WORKSPACE="ws-phi3",
        CONNECTION_NAME="phi3-finetuned",
    )


def workspace(**kwargs: object) -> FakeWorkspace:
    """Ours: one endpoint with blue (NC6s_v3 x 2) and green (NC24ads_A100_v4 x 1), the connection,
    two model versions. Not ours: an untagged endpoint and another tool's endpoint and model."""
    fake = FakeWorkspace(
        endpoints={
            "phi3-ft-endpoint": (
                OURS,
                [
                    deployment("blue-0123", "Standard_NC6s_v3", 2),
                    deployment("green-4567", "Standard_NC24ads_A100_v4"),
                ],
            ),
            "prod-chat": ({}, [deployment("main", "Standard_NC24s_v3")]),
            "other-team": ({CREATED_BY_TAG: "someone-else"}, [deployment("main")]),
        },
        connections={"phi3-finetuned", "someone-elses-connection"},
        models=[
            (ModelRef(name="phi3-mini-ft", version="1"), OURS),
            (ModelRef(name="phi3-mini-ft", version="2"), OURS),
            (ModelRef(name="prod-model", version="7"), {CREATED_BY_TAG: "someone-else"}),
        ],
    )
    for key, value in kwargs.items():
        setattr(fake, key, value)
    return fake


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, fake: FakeWorkspace, settings: Settings
) -> tuple[int, str, str]:
    code = teardown.main(list(argv), backends=backends(fake), settings=settings)
    out, err = capsys.readouterr()
    return code, out, err


@dataclass
class Terminal:
    """What the person at the terminal types (`answers`) and what they were asked (`asked`)."""

    answers: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def ask(self, question: str) -> str:
        self.asked.append(question)
        return self.answers.pop(0)


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """stdin is a terminal."""
    terminal = Terminal()
    monkeypatch.setattr(teardown, "stdin_is_tty", lambda: True)
    monkeypatch.setattr(teardown, "ask", terminal.ask)
    return terminal


@pytest.fixture
def no_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    def ask(question: str) -> str:
        raise AssertionError("asked without a terminal")

    monkeypatch.setattr(teardown, "stdin_is_tty", lambda: False)
    monkeypatch.setattr(teardown, "ask", ask)


# -- core/costs.py ---------------------------------------------------------------------------------


def test_price_table_covers_the_tutorial_and_common_gpu_skus() -> None:
    assert costs.hourly_cost("Standard_NC6s_v3") == 3.06  # the tutorial's serving size
    assert costs.hourly_cost("Standard_NC24ads_A100_v4") == 3.673  # its fine-tuning size
    for sku in (
        "Standard_NC12s_v3",
        "Standard_NC24s_v3",
        "Standard_NC48ads_A100_v4",
        "Standard_NC96ads_A100_v4",
        "Standard_ND96asr_v4",
        "Standard_NC4as_T4_v3",
        "Standard_NC8as_T4_v3",
        "Standard_NC16as_T4_v3",
        "Standard_NC64as_T4_v3",
        "Standard_E4s_v3",
        "Standard_DS3_v2",
    ):
        assert costs.PRICES_PER_HOUR[sku] > 0, sku
    assert costs.PRICES_PER_HOUR["local"] == 0.0
    assert Settings.model_fields["TRAINING_INSTANCE_TYPE"].default in costs.PRICES_PER_HOUR
    assert Settings.model_fields["SERVING_INSTANCE_TYPE"].default in costs.PRICES_PER_HOUR


def test_hourly_cost_multiplies_matches_case_insensitively_and_knows_what_it_does_not_know() -> None:
    assert costs.hourly_cost("standard_nc6s_v3", 3) == 9.18
    assert costs.hourly_cost("STANDARD_NC24ADS_A100_V4", 2) == 7.346
    assert costs.hourly_cost("local", 4) == 0.0
    assert costs.hourly_cost("Standard_Imaginary_v9") is None
    with pytest.raises(ValueError):
        costs.hourly_cost("Standard_NC6s_v3", -1)


def test_format_cost() -> None:
    assert costs.format_cost(3.06) == "$3.06/h"
    assert costs.format_cost(3.673) == "$3.673/h"
    assert costs.format_cost(0.0) == "$0.00/h"
    assert costs.format_cost(None) == "unknown"


# -- inventory ---------------------------------------------------------------------------------------


def test_inventory_lists_only_what_the_app_created_with_exact_costs(azure: Settings) -> None:
    inv = teardown.inventory(backends(workspace()), azure)

    assert [e.name for e in inv.endpoints] == ["phi3-ft-endpoint"]
    (ep,) = inv.endpoints
    assert [(d.name, d.instance_type, d.instance_count, d.cost_per_hour) for d in ep.deployments] == [
        ("blue-0123", "Standard_NC6s_v3", 2, 6.12),
        ("green-4567", "Standard_NC24ads_A100_v4", 1, 3.673),
    ]
    assert ep.cost_per_hour == 9.793
    assert inv.total_per_hour == 9.793
    assert inv.unpriced == []
    assert inv.not_ours == []  # untagged endpoints are not listed unless named...
    assert inv.others == 2  # ...only counted
    assert inv.connection == "phi3-finetuned"
    assert [(m.name, m.version, m.run) for m in inv.models] == [
        ("phi3-mini-ft", "1", "ft-0123456789abcdef"),
        ("phi3-mini-ft", "2", "ft-0123456789abcdef"),
    ]
    assert inv.problems == []
    assert "East US" in inv.pricing and costs.PRICES_AS_OF in inv.pricing


def test_total_adds_up_several_endpoints(azure: Settings) -> None:
    fake = workspace()
    fake.endpoints["phi3-ft-second"] = (OURS, [deployment("blue-89ab", "Standard_NC4as_T4_v3", 3)])
    inv = teardown.inventory(backends(fake), azure)
    assert [(e.name, e.cost_per_hour) for e in inv.endpoints] == [
        ("phi3-ft-endpoint", 9.793),
        ("phi3-ft-second", 1.578),
    ]
    assert inv.total_per_hour == 11.371


def test_unknown_instance_type_is_unknown_and_left_out_of_the_total(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace()
    fake.endpoints["phi3-ft-endpoint"][1].append(deployment("grey-cdef", "Standard_Imaginary_v9", 2))

    inv = teardown.inventory(backends(fake), azure)
    grey = inv.endpoints[0].deployments[-1]
    assert grey.cost_per_hour is None
    assert inv.endpoints[0].cost_per_hour == 9.793  # the known part
    assert inv.total_per_hour == 9.793
    assert inv.unpriced == ["phi3-ft-endpoint/grey-cdef: Standard_Imaginary_v9 × 2 (no list price)"]

    code, out, _ = run(capsys, fake=fake, settings=azure)
    assert code == 2
    assert "unknown" in out
    assert "Total: $9.793/h" in out
    assert "Not in the total, cost unknown:" in out
    assert "phi3-ft-endpoint/grey-cdef: Standard_Imaginary_v9 × 2" in out


def test_offline_backend_costs_nothing_whatever_instance_type_it_records() -> None:
    fake = workspace()
    inv = teardown.inventory(backends(fake), Settings(BACKEND="local", LOCAL_RUN_DIR="/tmp/x"))
    assert {d.priced_as for d in inv.endpoints[0].deployments} == {"local"}
    assert inv.total_per_hour == 0.0
    assert inv.unpriced == []


def test_named_untagged_endpoint_is_listed_as_not_ours_and_never_deleted(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace()
    code, out, _ = run(
        capsys,
        "--yes",
        "--endpoint",
        "prod-chat",
        "--endpoint",
        "other-team",
        "--endpoint",
        "phi3-ft-endpoint",
        "--endpoint",
        "gone-already",
        fake=fake,
        settings=azure,
    )
    assert code == 0
    assert "Not ours, left alone:" in out
    assert "endpoint prod-chat: no created-by tag" in out
    assert "endpoint other-team: tagged created-by=someone-else" in out
    assert "Endpoint gone-already: not found" in out
    deleted_endpoints = [n for kind, n in fake.deleted if kind == "endpoint"]
    assert deleted_endpoints == ["phi3-ft-endpoint"]
    assert set(fake.endpoints) == {"prod-chat", "other-team"}


def test_only_named_endpoints_are_considered(azure: Settings) -> None:
    fake = workspace()
    fake.endpoints["phi3-ft-second"] = (OURS, [deployment("blue-89ab")])
    inv = teardown.inventory(backends(fake), azure, endpoints=["phi3-ft-second"])
    assert [e.name for e in inv.endpoints] == ["phi3-ft-second"]
    assert inv.total_per_hour == 3.06
    assert inv.not_ours == [] and inv.not_found == []
    # the connection and the model versions may serve the endpoints not named: kept
    everything = teardown.inventory(backends(fake), azure)
    assert everything.connection is not None and everything.models
    assert inv.connection is None and inv.models == []


def test_untagged_only_named_means_nothing_to_delete(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace(connections=set(), models=[])
    code, out, _ = run(capsys, "--endpoint", "prod-chat", fake=fake, settings=azure)
    assert code == 0
    assert "Nothing to delete" in out
    assert "endpoint prod-chat: no created-by tag" in out
    assert fake.deleted == []


# -- deleting ----------------------------------------------------------------------------------------


def test_yes_deletes_everything_listed_and_reports_it(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace()
    code, out, err = run(capsys, "--yes", fake=fake, settings=azure)
    assert code == 0, err
    assert fake.deleted == [
        ("endpoint", "phi3-ft-endpoint"),
        ("connection", "phi3-finetuned"),
        ("model", "phi3-mini-ft:1"),
        ("model", "phi3-mini-ft:2"),
    ]
    assert set(fake.endpoints) == {"prod-chat", "other-team"}  # never anything else
    assert fake.connections == {"someone-elses-connection"}
    assert [ref.name for ref, _ in fake.models] == ["prod-model"]
    assert "Total: $9.793/h" in out
    assert "Deleted 4 of 4." in out
    assert "prod-chat" not in out and "prod-model" not in out


def test_one_failed_delete_does_not_stop_the_others(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace(fail={"phi3-finetuned"})
    fake.endpoints["phi3-ft-second"] = (OURS, [deployment("blue-89ab")])
    code, out, _ = run(capsys, "--yes", fake=fake, settings=azure)
    assert code == 1
    assert fake.deleted == [
        ("endpoint", "phi3-ft-endpoint"),
        ("endpoint", "phi3-ft-second"),
        ("model", "phi3-mini-ft:1"),
        ("model", "phi3-mini-ft:2"),
    ]
    assert "FAILED: RuntimeError: connection phi3-finetuned is locked" in out
    assert "Deleted 4 of 5; failed: connection phi3-finetuned." in out


def test_delete_returns_a_result_per_item(azure: Settings) -> None:
    fake = workspace(fail={"phi3-ft-endpoint"})
    inv = teardown.inventory(backends(fake), azure)
    results = teardown.delete(backends(fake), inv)
    assert [(r.kind, r.name, r.ok) for r in results] == [
        ("endpoint", "phi3-ft-endpoint", False),
        ("connection", "phi3-finetuned", True),
        ("model", "phi3-mini-ft:1", True),
        ("model", "phi3-mini-ft:2", True),
    ]
    assert results[0].error == "RuntimeError: endpoint phi3-ft-endpoint is locked"


def test_no_terminal_and_no_yes_refuses_with_exit_2(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace()
    code, out, err = run(capsys, fake=fake, settings=azure)
    assert code == 2
    assert fake.deleted == []
    assert "--yes" in err and "Nothing was deleted" in err
    assert "phi3-ft-endpoint" in out  # the inventory is still shown


def test_terminal_answer_no_deletes_nothing(
    azure: Settings, capsys: pytest.CaptureFixture[str], tty: Terminal
) -> None:
    fake = workspace()
    tty.answers.append("n")
    code, out, _ = run(capsys, fake=fake, settings=azure)
    assert code == 0
    assert fake.deleted == []
    assert tty.asked == ["Delete these? [y/N] "]
    assert "Nothing deleted." in out


def test_terminal_empty_answer_is_no(
    azure: Settings, capsys: pytest.CaptureFixture[str], tty: Terminal
) -> None:
    fake = workspace()
    tty.answers.append("")
    code, _, _ = run(capsys, fake=fake, settings=azure)
    assert code == 0
    assert fake.deleted == []


def test_terminal_answer_yes_deletes(
    azure: Settings, capsys: pytest.CaptureFixture[str], tty: Terminal
) -> None:
    fake = workspace()
    tty.answers.append("y")
    code, out, _ = run(capsys, fake=fake, settings=azure)
    assert code == 0
    assert len(fake.deleted) == 4
    assert "Deleted 4 of 4." in out


def test_keep_models_keeps_models(azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None) -> None:
    fake = workspace()
    code, out, _ = run(capsys, "--yes", "--keep-models", fake=fake, settings=azure)
    assert code == 0
    assert fake.deleted == [("endpoint", "phi3-ft-endpoint"), ("connection", "phi3-finetuned")]
    assert len(fake.models) == 3
    assert "Model versions: kept (--keep-models)" in out


def test_nothing_to_delete_exits_0(azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None) -> None:
    fake = FakeWorkspace(endpoints={"prod-chat": ({}, [deployment("main")])})
    code, out, _ = run(capsys, fake=fake, settings=azure)
    assert code == 0
    assert "Nothing to delete" in out
    assert fake.deleted == []


def test_a_listing_failure_is_named_and_the_rest_still_listed(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace()

    def broken(created_by: str) -> list[tuple[ModelRef, dict[str, str]]]:
        raise ConnectionError("registry unreachable")

    fake.list_models = broken  # type: ignore[method-assign]
    code, out, _ = run(capsys, "--yes", fake=fake, settings=azure)
    assert code == 1
    assert "model versions could not be listed: ConnectionError: registry unreachable" in out
    assert fake.deleted == [("endpoint", "phi3-ft-endpoint"), ("connection", "phi3-finetuned")]


# -- --json --------------------------------------------------------------------------------------------


def test_json_without_yes_is_a_dry_run(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace()
    code, out, _ = run(capsys, "--json", fake=fake, settings=azure)
    assert code == 0
    assert fake.deleted == []
    doc = json.loads(out)
    assert doc["dry_run"] is True and doc["ok"] is True and doc["results"] == []
    inv = doc["inventory"]
    assert [e["name"] for e in inv["endpoints"]] == ["phi3-ft-endpoint"]
    assert inv["endpoints"][0]["deployments"][0]["cost_per_hour"] == 6.12
    assert inv["total_per_hour"] == 9.793
    assert inv["connection"] == "phi3-finetuned"
    assert [m["version"] for m in inv["models"]] == ["1", "2"]


def test_json_with_yes_deletes_and_reports(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace(fail={"phi3-mini-ft:2"})
    code, out, _ = run(capsys, "--json", "--yes", fake=fake, settings=azure)
    assert code == 1
    doc = json.loads(out)
    assert doc["dry_run"] is False and doc["exit_code"] == 1
    assert [(r["kind"], r["name"], r["ok"]) for r in doc["results"]] == [
        ("endpoint", "phi3-ft-endpoint", True),
        ("connection", "phi3-finetuned", True),
        ("model", "phi3-mini-ft:1", True),
        ("model", "phi3-mini-ft:2", False),
    ]
    assert "is locked" in doc["results"][-1]["error"]


def test_json_nothing_to_delete(azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None) -> None:
    code, out, _ = run(capsys, "--json", "--yes", fake=FakeWorkspace(), settings=azure)
    assert code == 0
    doc = json.loads(out)
    assert doc["inventory"]["endpoints"] == [] and doc["results"] == []


# -- settings ---------------------------------------------------------------------------------------


def test_settings_come_from_local_settings_json_with_the_environment_winning(tmp_path: Path) -> None:
    values = {"BACKEND": "azureml", "AZURE_SUBSCRIPTION_ID": "sub", "AZURE_RESOURCE_GROUP": "rg"}
    values |= {
        "AZUREML_WORKSPACE": "from-file",
        "CONNECTION_NAME": "conn-from-file",
        "ENDPOINT_TTL_HOURS": "",
    }
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": values}))
    env = {"AZUREML_WORKSPACE": "from-env"}

    settings, source = teardown.load_settings(env, root=tmp_path)

    assert settings.BACKEND == "azureml"
    assert settings.AZUREML_WORKSPACE == "from-env"
    assert settings.CONNECTION_NAME == "conn-from-file"
    assert settings.ENDPOINT_TTL_HOURS is None  # blank = unset, as in the Functions host
    assert "local.settings.json" in source
    assert env["CONNECTION_NAME"] == "conn-from-file"  # exported, as `func start` does


def test_sample_placeholders_are_refused(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "local.settings.sample.json"
    (tmp_path / "local.settings.json").write_text(sample.read_text())
    with pytest.raises(teardown.ConfigError, match="placeholder"):
        teardown.load_settings({}, root=tmp_path)


def test_without_backend_the_dev_host_run_dir_means_offline(tmp_path: Path) -> None:
    (tmp_path / ".run").mkdir()
    env: dict[str, str] = {}
    settings, source = teardown.load_settings(env, root=tmp_path)
    assert settings.BACKEND == "local"
    assert Path(settings.LOCAL_RUN_DIR) == tmp_path / ".run"
    assert "offline" in source
    assert env["HF_HUB_OFFLINE"] == "1"  # the dev host's offline defaults


def test_without_backend_a_workspace_and_a_run_dir_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / ".run").mkdir()
    env = {"AZURE_SUBSCRIPTION_ID": "sub", "AZURE_RESOURCE_GROUP": "rg", "AZUREML_WORKSPACE": "ws"}
    with pytest.raises(teardown.ConfigError, match="set BACKEND=azureml or BACKEND=local"):
        teardown.load_settings(env, root=tmp_path)


def test_without_backend_or_workspace_it_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE"):
        monkeypatch.delenv(key, raising=False)  # Settings also reads the real environment
    with pytest.raises(teardown.ConfigError, match="AZUREML_WORKSPACE") as caught:
        teardown.load_settings({"BACKEND": "azureml"}, root=tmp_path)
    assert "make up" in str(caught.value)

    def refuse(environ: object = None, root: Path = tmp_path) -> tuple[Settings, str]:
        raise teardown.ConfigError("BACKEND=azureml needs AZUREML_WORKSPACE")

    monkeypatch.setattr(teardown, "load_settings", refuse)
    assert teardown.main([]) == 2
    assert "error: BACKEND=azureml needs AZUREML_WORKSPACE" in capsys.readouterr().err


def test_endpoint_takes_several_names_at_once(
    azure: Settings, capsys: pytest.CaptureFixture[str], no_tty: None
) -> None:
    fake = workspace()
    code, out, _ = run(
        capsys, "--json", "--endpoint", "prod-chat", "phi3-ft-endpoint", fake=fake, settings=azure
    )
    inv = json.loads(out)["inventory"]
    assert code == 0
    assert [e["name"] for e in inv["endpoints"]] == ["phi3-ft-endpoint"]
    assert [e["name"] for e in inv["not_ours"]] == ["prod-chat"]


def test_teardown_wires_the_apps_backends_without_storage(tmp_path: Path) -> None:
    """The same factory as the app (backends.registry.build); no datasets account is needed."""
    from localml.training import LocalTraining

    backends = teardown.build_backends(Settings(BACKEND="local", LOCAL_RUN_DIR=str(tmp_path)))
    assert isinstance(backends.training, LocalTraining)
    with pytest.raises(RuntimeError, match="teardown uses no datasets storage"):
        backends.datasets.describe(BlobRef(container="datasets", name="x.jsonl"))
    with pytest.raises(RuntimeError, match="teardown uses no datasets storage"):
        backends.turns.current("phi3-ft-endpoint")
