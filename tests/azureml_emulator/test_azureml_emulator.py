"""The Azure ML emulator itself: its kept subset of the official REST specs, its request validator,
the fidelity of its answers to Microsoft's own examples, and its ARM envelope.

1. Spec subset integrity: provenance (`x-source`), `$ref` closure, examples/SOURCES.json.
2. `openapi.RequestValidator` as a pure unit: every official request example validates against its
   own operation; then one negative case per rule; ERRATA apply and are what makes the SDK's bodies pass.
3. Fidelity over HTTPS: for every served route with an official example, the emulator's answer has
   the example's shape (`shape_diff`) and a declared status, and holds only declared properties.
4. The ARM envelope: auth, injected faults, error bodies, long-running operations, scripted
   deployments and jobs, the service rules the world enforces.

Raw requests go through httpx with the emulator's CA bundle and a token from its managed-identity
route; request bodies are the ones azure-ai-ml 1.35.2 sends through `backends.azureml` (captured from
the emulator's validator), so no test imports the SDK and none waits for wall time.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from azureml_emulator import openapi
from azureml_emulator.openapi import SPECS, RequestValidator, SpecSet
from azureml_emulator.server import (
    IDENTITY_HEADER,
    REGISTRY_RESOURCE_GROUP,
    REGISTRY_SUBSCRIPTION,
    EmulatorServer,
)
from azureml_emulator.world import PHI3, DeploymentScript, Fault, JobScript, World

JOB_V = "2024-10-01-preview"  # jobs PUT/GET (azure-ai-ml's fine-tuning client)
CANCEL_V = "2023-04-01-preview"  # jobs cancel (the SDK's 2023-02 operations group)
ENDPOINT_V = "2022-02-01-preview"
DEPLOYMENT_V = "2023-04-01-preview"
MODEL_V = "2023-08-01-preview"
CONNECTION_V = "2024-04-01-preview"
WORKSPACE_V = "2024-10-01-preview"

HEX40 = re.compile(r"^[0-9a-f]{40}$")
PLACEHOLDER_KEYS = ({"string"}, {"some_string"})  # the example generator's name for "any map key"

JOB = "ft-0123456789abcdef"
ENDPOINT = "ep-fidelity"
DEPLOYMENT = "blue"
MODEL = "phi3-ft-mine"
CONNECTION = "conn-phi3"
A100 = "Standard_NC24ads_A100_v4"


def load_example(version: str, name: str) -> dict[str, Any]:
    return json.loads((SPECS / version / "examples" / name).read_text(encoding="utf-8"))


def spec_files() -> list[Path]:
    return sorted(p for p in SPECS.rglob("*.json") if "examples" not in p.relative_to(SPECS).parts)


def example_files() -> list[Path]:
    return sorted(p for p in SPECS.glob("*/examples/**/*.json") if p.name != "SOURCES.json")


def example_key(path: Path) -> tuple[str, str]:
    """(api-version, name under its examples/ folder) of an example file."""
    version = path.relative_to(SPECS).parts[0]
    return version, str(path.relative_to(SPECS / version / "examples"))


def walk_refs(node: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from walk_refs(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_refs(value, (*where, str(i)))


# --------------------------------------------------------------------------- 1. spec subset integrity


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: str(p.relative_to(SPECS)))
def test_every_kept_spec_file_names_its_source(path: Path) -> None:
    source = json.loads(path.read_text(encoding="utf-8")).get("x-source")
    assert isinstance(source, dict), "no x-source"
    assert source.get("repo") == "Azure/azure-rest-api-specs"
    assert HEX40.match(str(source.get("commit", ""))), source.get("commit")
    upstream = str(source.get("path", ""))
    assert upstream.startswith("specification/")
    assert upstream.endswith("/" + path.name)
    folder = path.parent.name
    if folder[:1].isdigit():  # an api-version folder: the upstream file is of that version
        assert f"/{folder}/" in upstream


# Refs that leave the kept subset: all are path/query parameters of files not copied
# (machineLearningServices.json#/parameters at versions where it is absent or holds no parameters,
# registries.json). The validator skips such a parameter (`RequestValidator._param`).
UNRESOLVED_PARAMETER_REFS = {
    ("2022-02-01-preview/mfe.json", "machineLearningServices.json#/parameters/WorkspaceNameParameter"),
    ("2022-02-01-preview/mfe.json", "machineLearningServices.json#/parameters/PaginationParameter"),
    ("2023-04-01-preview/mfe.json", "machineLearningServices.json#/parameters/WorkspaceNameParameter"),
    ("2023-04-01-preview/mfe.json", "machineLearningServices.json#/parameters/PaginationParameter"),
    ("2023-08-01-preview/mfe.json", "machineLearningServices.json#/parameters/WorkspaceNameParameter"),
    ("2023-08-01-preview/mfe.json", "machineLearningServices.json#/parameters/PaginationParameter"),
    ("2023-08-01-preview/mfe.json", "registries.json#/parameters/RegistryNameParameter"),
    ("2024-10-01-preview/mfe.json", "machineLearningServices.json#/parameters/WorkspaceNameParameter"),
}


def test_every_ref_resolves_except_listed_parameters_of_files_not_kept() -> None:
    specs = SpecSet()
    unresolved: set[tuple[str, str]] = set()
    checked = 0
    for path in spec_files():
        doc = specs.doc(path)
        for section in ("definitions", "paths", "parameters", "responses"):
            for where, ref in walk_refs(doc.get(section, {}), (section,)):
                checked += 1
                try:
                    specs.resolve(ref, path)
                except (KeyError, FileNotFoundError):
                    # Only an operation's parameter may point outside the subset.
                    assert section == "paths" and where[-2] == "parameters", (path.name, where, ref)
                    assert "#/parameters/" in ref, ref
                    external = doc["x-source"].get("external_refs", [])
                    assert ref in external, f"{ref} not declared in x-source.external_refs of {path}"
                    unresolved.add((str(path.relative_to(SPECS)), ref))
    assert checked > 100
    assert unresolved == UNRESOLVED_PARAMETER_REFS


def test_discriminated_models_name_what_they_left_out() -> None:
    """A discriminator whose subtypes are not all kept says so in x-source.omitted, which is how the
    validator tells "not kept" from "unknown" (spot check on the two unions the app sends)."""
    specs = SpecSet()
    jobs = specs.doc(SPECS / JOB_V / "mfe.json")["x-source"]["omitted"]
    assert "CommandJob (Command)" in jobs["JobBase"]
    connections = specs.doc(SPECS / CONNECTION_V / "workspaceRP.json")["x-source"]["omitted"]
    assert "(AccessKey)" in connections["WorkspaceConnectionPropertiesV2"]


@pytest.mark.parametrize("version", SpecSet().api_versions())
def test_examples_sources_name_existing_files(version: str) -> None:
    folder = SPECS / version / "examples"
    sources = json.loads((folder / "SOURCES.json").read_text(encoding="utf-8"))
    assert sources["repo"] == "Azure/azure-rest-api-specs"
    listed = set(sources["files"])
    for name, entry in sources["files"].items():
        assert (folder / name).is_file(), f"{version}/examples/{name} listed but missing"
        assert HEX40.match(entry["commit"]), entry
        assert entry["path"].startswith("specification/") and entry["path"].endswith("/examples/" + name)
    present = {str(p.relative_to(folder)) for p in folder.rglob("*.json") if p.name != "SOURCES.json"}
    assert present == listed, "every kept example is listed, and only those"


def test_examples_carry_their_folders_api_version_except_the_documented_substitute() -> None:
    mismatched = {}
    for version, name in map(example_key, example_files()):
        declared = load_example(version, name)["parameters"]["api-version"]
        if declared != version:
            mismatched[(version, name)] = declared
    key = (CONNECTION_V, "WorkspaceConnection/delete.json")
    assert mismatched == {key: "2024-04-01"}
    sources = json.loads((SPECS / CONNECTION_V / "examples" / "SOURCES.json").read_text(encoding="utf-8"))
    assert sources["files"][key[1]]["note"].startswith("SUBSTITUTE")


# --------------------------------------------------------------------------- 2. the validator (no server)


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator.load()


def example_request(
    validator: RequestValidator, version: str, name: str, operation_id: str
) -> tuple[str, str, Any]:
    """(method, path, body) of an official example, the path built from its parameters and the
    path template of `operation_id`."""
    params = load_example(version, name)["parameters"]
    op = next(o for o in validator.specs.operations(version) if o.spec.get("operationId") == operation_id)
    path = re.sub(r"\{([^}]+)\}", lambda m: str(params[m.group(1)]), op.template)
    assert validator.find(op.method, path, version) == op, "the built path selects the same operation"
    return op.method, path, params.get("body")


REQUEST_EXAMPLES = [
    (JOB_V, "Job/FineTuningJob/createOrUpdate.json", "Jobs_CreateOrUpdate"),
    (
        DEPLOYMENT_V,
        "OnlineDeployment/ManagedOnlineDeployment/createOrUpdate.json",
        "OnlineDeployments_CreateOrUpdate",
    ),
    (ENDPOINT_V, "OnlineEndpoint/createOrUpdate.json", "OnlineEndpoints_CreateOrUpdate"),
    (ENDPOINT_V, "OnlineEndpoint/update.json", "OnlineEndpoints_Update"),
    (MODEL_V, "Workspace/ModelVersion/createOrUpdate.json", "ModelVersions_CreateOrUpdate"),
    (CONNECTION_V, "WorkspaceConnection/create.json", "WorkspaceConnections_Create"),
]


def test_every_official_request_body_is_covered() -> None:
    with_body = {
        (version, name)
        for version, name in map(example_key, example_files())
        if "body" in load_example(version, name)["parameters"]
    }
    covered = {(v, n) for v, n, _ in REQUEST_EXAMPLES}
    # The registry PUT is not kept (the example stands in for the registry GET's response).
    assert with_body == covered | {(MODEL_V, "Registry/ModelVersion/createOrUpdate.json")}


@pytest.mark.parametrize(("version", "name", "operation_id"), REQUEST_EXAMPLES, ids=lambda v: str(v))
def test_official_request_examples_validate(
    validator: RequestValidator, version: str, name: str, operation_id: str
) -> None:
    method, path, body = example_request(validator, version, name, operation_id)
    assert body is not None
    # None of the kept official examples contradicts its own definition (no stray field, no wrong
    # type), so every one validates cleanly; the FineTuningJob example's outputs carry no assetName,
    # so it passes with or without the AssetJobOutput erratum.
    assert validator.validate(method, path, version, body) == []


def test_a_body_for_an_operation_not_kept_is_refused(validator: RequestValidator) -> None:
    ex = load_example(MODEL_V, "Registry/ModelVersion/createOrUpdate.json")["parameters"]
    path = (
        f"/subscriptions/{ex['subscriptionId']}/resourceGroups/{ex['resourceGroupName']}/providers/"
        f"Microsoft.MachineLearningServices/registries/{ex['registryName']}/models/{ex['modelName']}"
        f"/versions/{ex['version']}"
    )
    assert validator.validate("PUT", path, MODEL_V, ex["body"]) == [
        f"no official definition kept for PUT {path} at api-version {MODEL_V}"
    ]


# Every kept example, by the operation whose responses it shows (None: that operation is not kept).
EXAMPLE_OPERATIONS: dict[tuple[str, str], str | None] = {
    (ENDPOINT_V, "OnlineEndpoint/createOrUpdate.json"): "OnlineEndpoints_CreateOrUpdate",
    (ENDPOINT_V, "OnlineEndpoint/delete.json"): "OnlineEndpoints_Delete",
    (ENDPOINT_V, "OnlineEndpoint/get.json"): "OnlineEndpoints_Get",
    (ENDPOINT_V, "OnlineEndpoint/list.json"): "OnlineEndpoints_List",
    (ENDPOINT_V, "OnlineEndpoint/update.json"): "OnlineEndpoints_Update",
    (DEPLOYMENT_V, "Job/cancel.json"): "Jobs_Cancel",
    (DEPLOYMENT_V, "OnlineDeployment/ManagedOnlineDeployment/createOrUpdate.json"): (
        "OnlineDeployments_CreateOrUpdate"
    ),
    (DEPLOYMENT_V, "OnlineDeployment/ManagedOnlineDeployment/get.json"): "OnlineDeployments_Get",
    (DEPLOYMENT_V, "OnlineDeployment/list.json"): "OnlineDeployments_List",
    (DEPLOYMENT_V, "Workspace/OnlineDeployment/delete.json"): "OnlineDeployments_Delete",
    (DEPLOYMENT_V, "Workspace/OnlineEndpoint/get.json"): "OnlineEndpoints_Get",
    # The registry PUT is not kept; its 200 body stands in for RegistryModelVersions_Get's.
    (MODEL_V, "Registry/ModelVersion/createOrUpdate.json"): "RegistryModelVersions_Get",
    (MODEL_V, "Registry/ModelVersion/list.json"): "RegistryModelVersions_List",
    (MODEL_V, "Usage/list.json"): "Usages_List",
    (MODEL_V, "VirtualMachineSize/list.json"): "VirtualMachineSizes_List",
    (MODEL_V, "Workspace/ModelContainer/get.json"): "ModelContainers_Get",
    (MODEL_V, "Workspace/ModelContainer/list.json"): "ModelContainers_List",
    (MODEL_V, "Workspace/ModelVersion/createOrUpdate.json"): "ModelVersions_CreateOrUpdate",
    (MODEL_V, "Workspace/ModelVersion/get.json"): "ModelVersions_Get",
    (MODEL_V, "Workspace/ModelVersion/list.json"): "ModelVersions_List",
    (CONNECTION_V, "WorkspaceConnection/create.json"): "WorkspaceConnections_Create",
    (CONNECTION_V, "WorkspaceConnection/delete.json"): "WorkspaceConnections_Delete",
    (CONNECTION_V, "WorkspaceConnection/get.json"): "WorkspaceConnections_Get",
    (CONNECTION_V, "WorkspaceConnection/listSecrets.json"): "WorkspaceConnections_ListSecrets",
    (JOB_V, "Job/FineTuningJob/createOrUpdate.json"): "Jobs_CreateOrUpdate",
    (JOB_V, "Job/FineTuningJob/get.json"): "Jobs_Get",
    (JOB_V, "Job/FineTuningJob/list.json"): None,  # Jobs_List not kept
    (JOB_V, "Job/cancel.json"): "Jobs_Cancel",
    (JOB_V, "Job/delete.json"): "Jobs_Delete",
    (WORKSPACE_V, "Workspace/get.json"): None,  # Workspaces_Get not kept
}

_UUID_PLACEHOLDERS = [
    f"response.identity.{field}: 'string' is not a uuid"
    for field in (
        "principalId",
        "tenantId",
        "userAssignedIdentities.string.principalId",
        "userAssignedIdentities.string.clientId",
    )
]

# What the official response examples contradict in their own definitions, exactly.
RESPONSE_EXAMPLE_PROBLEMS: dict[tuple[str, str, str], list[str]] = {
    # Placeholder "string" where ManagedServiceIdentity declares format uuid (get.json uses real uuids).
    (ENDPOINT_V, "OnlineEndpoint/createOrUpdate.json", "200"): _UUID_PLACEHOLDERS,
    (ENDPOINT_V, "OnlineEndpoint/createOrUpdate.json", "201"): _UUID_PLACEHOLDERS,
    (ENDPOINT_V, "OnlineEndpoint/update.json", "200"): _UUID_PLACEHOLDERS,
    # A stray field: queueSettings belongs to FineTuningJob (as in the same file's 200 body), not to
    # fineTuningDetails; CustomModelFineTuning is closed (additionalProperties: false).
    (JOB_V, "Job/FineTuningJob/createOrUpdate.json", "201"): [
        "response.properties.fineTuningDetails.queueSettings: not a property of CustomModelFineTuning"
    ],
    # Subset limits, not contradictions: the examples show subtypes the subset does not keep.
    (DEPLOYMENT_V, "OnlineDeployment/list.json", "200"): [
        "response.value[0].properties: endpointComputeType='Kubernetes' selects a subtype of "
        "OnlineDeployment not kept in the subset"
    ],
    (CONNECTION_V, "WorkspaceConnection/listSecrets.json", "200"): [
        "response.properties: authType='AccessKey' selects a subtype of WorkspaceConnectionPropertiesV2 "
        "not kept in the subset"
    ],
}


def test_every_example_is_classified() -> None:
    assert set(map(example_key, example_files())) == set(EXAMPLE_OPERATIONS)


@pytest.mark.parametrize(
    ("version", "name"),
    [key for key, op in EXAMPLE_OPERATIONS.items() if op is not None],
    ids=lambda v: str(v),
)
def test_official_response_examples_against_their_definitions(
    validator: RequestValidator, version: str, name: str
) -> None:
    """Each example response, read with the validator's rules (its internal checker) against the
    schema its operation declares for that status: only the listed contradictions."""
    op = next(
        o
        for o in validator.specs.operations(version)
        if o.spec.get("operationId") == EXAMPLE_OPERATIONS[(version, name)]
    )
    checked = 0
    for status, response in load_example(version, name)["responses"].items():
        if status != "200" and op.spec["operationId"] == "RegistryModelVersions_Get":
            continue  # the stand-in: only its 200 body is a GET's
        assert status in op.spec["responses"], f"{name} shows status {status}, not declared"
        schema = op.spec["responses"][status].get("schema")
        if response.get("body") is None or schema is None:
            continue
        checked += 1
        problems = openapi._Checker(validator.specs, version).check(
            schema, response["body"], Path(op.file), "response"
        )
        assert problems == RESPONSE_EXAMPLE_PROBLEMS.get((version, name, status), []), status
    assert checked or name.endswith(("delete.json", "cancel.json"))


@pytest.fixture
def job_request(validator: RequestValidator) -> tuple[str, str, Any]:
    method, path, body = example_request(
        validator, JOB_V, "Job/FineTuningJob/createOrUpdate.json", "Jobs_CreateOrUpdate"
    )
    return method, path, copy.deepcopy(body)


def _mutated(body: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    change(body["properties"])
    return body


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda p: p.update(bogus=1),
            "body.properties.bogus: not a property of FineTuningJob",
            id="unknown-property",
        ),
        pytest.param(
            lambda p: p.update(experimentName=5),
            "body.properties.experimentName: expected a string, got int",
            id="wrong-type",
        ),
        pytest.param(
            lambda p: p["resources"].update(instanceTypes="Standard_NC6"),
            "body.properties.resources.instanceTypes: expected an array",
            id="scalar-for-array",
        ),
        pytest.param(
            lambda p: p.pop("fineTuningDetails"),
            "body.properties.fineTuningDetails: required",
            id="missing-required",
        ),
        pytest.param(
            lambda p: p.update(jobType="Command"),
            "body.properties: jobType='Command' selects a subtype of JobBase not kept in the subset",
            id="subtype-not-kept",
        ),
        pytest.param(
            lambda p: p["fineTuningDetails"].update(modelProvider="AzureOpenAI"),
            "body.properties.fineTuningDetails: modelProvider='AzureOpenAI' selects a subtype of "
            "FineTuningVertical not kept in the subset",
            id="nested-subtype-not-kept",
        ),
        pytest.param(
            lambda p: p.update(jobType="Teleport"),
            "body.properties: jobType='Teleport' is not a known JobBase type",
            id="invented-subtype",
        ),
        pytest.param(
            lambda p: p.update(jobType="Auto"),
            "body.properties: jobType='Auto' is not a known JobBase type",
            id="invented-subtype-that-is-a-substring-of-an-omitted-one",
        ),
    ],
)
def test_invalid_job_bodies_are_reported(
    validator: RequestValidator,
    job_request: tuple[str, str, Any],
    change: Callable[[dict[str, Any]], object],
    expected: str,
) -> None:
    method, path, body = job_request
    assert validator.validate(method, path, JOB_V, _mutated(body, change)) == [expected]


def test_invalid_iso_duration_in_a_probe(validator: RequestValidator) -> None:
    method, path, body = example_request(
        validator,
        DEPLOYMENT_V,
        "OnlineDeployment/ManagedOnlineDeployment/createOrUpdate.json",
        "OnlineDeployments_CreateOrUpdate",
    )
    body = copy.deepcopy(body)
    body["properties"]["livenessProbe"]["initialDelay"] = "10 minutes"
    body["properties"]["readinessProbe"]["period"] = "PT1M30S"  # a valid one, for contrast
    assert validator.validate(method, path, DEPLOYMENT_V, body) == [
        "body.properties.livenessProbe.initialDelay: '10 minutes' is not a duration"
    ]


def test_path_parameter_pattern(validator: RequestValidator) -> None:
    method, path, body = example_request(
        validator, CONNECTION_V, "WorkspaceConnection/create.json", "WorkspaceConnections_Create"
    )
    short = path.rsplit("/", 1)[0] + "/ab"
    assert validator.validate(method, short, CONNECTION_V, body) == [
        "path parameter connectionName='ab' does not match ^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$"
    ]
    assert validator.validate(method, path.rsplit("/", 1)[0] + "/abc", CONNECTION_V, body) == []


def test_a_body_sent_to_an_operation_that_takes_none(
    validator: RequestValidator, job_request: tuple[str, str, Any]
) -> None:
    _, path, _ = job_request
    assert validator.validate("POST", path + "/cancel", JOB_V, {"reason": "x"}) == [
        "Jobs_Cancel takes no body"
    ]
    assert validator.validate("POST", path + "/cancel", JOB_V, None) == []
    assert validator.validate("PUT", path, JOB_V, None) == ["a body is required"]


def test_a_put_at_an_api_version_with_nothing_kept_is_refused(
    validator: RequestValidator, job_request: tuple[str, str, Any]
) -> None:
    method, path, body = job_request
    assert validator.validate(method, path, "2025-01-01-preview", body) == [
        f"no official definition kept for PUT {path} at api-version 2025-01-01-preview"
    ]
    # A read at such a version carries no body: accepted, and remembered as not covered.
    assert validator.validate("GET", path, "2025-01-01-preview", None) == []
    assert ("GET", "2025-01-01-preview", path) in validator.uncovered


# The connection body azure-ai-ml 1.35.2 sends for the app's Prompt flow connection.
SDK_CONNECTION_BODY: dict[str, Any] = {
    "properties": {
        "target": "https://127.0.0.1:1/inference/eastus2/ep/score",
        "credentials": {"keys": {"key": "k3y"}},
        "metadata": {
            "endpoint": "https://127.0.0.1:1/inference/eastus2/ep/score",
            "azureml.flow.connection_type": "Custom",
            "azureml.flow.module": "promptflow.connections",
        },
        "category": "CustomKeys",
        "isSharedToAll": False,
        "authType": "CustomKeys",
    }
}


def test_erratum_connection_metadata_is_a_string_map(
    validator: RequestValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path, _ = example_request(
        validator, CONNECTION_V, "WorkspaceConnection/create.json", "WorkspaceConnections_Create"
    )
    assert validator.validate("PUT", path, CONNECTION_V, SDK_CONNECTION_BODY) == []
    array = copy.deepcopy(SDK_CONNECTION_BODY)
    array["properties"]["metadata"] = ["endpoint"]
    assert validator.validate("PUT", path, CONNECTION_V, array) == [
        "body.properties.metadata: expected an object"
    ]
    # The erratum's evidence: the same version's listSecrets example answers an object.
    secrets = load_example(CONNECTION_V, "WorkspaceConnection/listSecrets.json")
    assert secrets["responses"]["200"]["body"]["properties"]["metadata"] == {}
    # Without the erratum, the published definition (an array of strings) rejects the SDK's body.
    monkeypatch.setattr(openapi, "ERRATA", {})
    assert validator.validate("PUT", path, CONNECTION_V, SDK_CONNECTION_BODY) == [
        "body.properties.metadata: expected an array"
    ]


def test_erratum_asset_name_of_a_job_output(
    validator: RequestValidator, job_request: tuple[str, str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    method, path, body = job_request
    body["properties"]["outputs"] = {
        "registered_model": {"assetName": "phi3-ft", "jobOutputType": "mlflow_model"}
    }
    assert validator.validate(method, path, JOB_V, body) == []
    wrong = copy.deepcopy(body)
    wrong["properties"]["outputs"]["registered_model"]["assetName"] = 7
    assert validator.validate(method, path, JOB_V, wrong) == [
        "body.properties.outputs.registered_model.assetName: expected a string, got int"
    ]
    monkeypatch.setattr(openapi, "ERRATA", {})
    assert validator.validate(method, path, JOB_V, body) == [
        "body.properties.outputs.registered_model.assetName: not a property of MLFlowModelJobOutput"
    ]


# --------------------------------------------------------------------------- shape_diff


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def shape_diff(example: Any, actual: Any, path: str = "") -> list[str]:
    """ "<key path>: <problem>" for every key path of `example` that `actual` lacks or holds with
    another JSON type. A null in the example is the service's nullable value: any type matches. A
    dict whose only key is the example generator's placeholder ("string") is a map: every entry of
    `actual` is checked against the placeholder's value. Every item of an actual list is checked
    against the example's first item."""
    if example is None:
        return []
    if _kind(example) != _kind(actual):
        return [f"{path or '$'}: {_kind(example)} expected, got {_kind(actual)}"]
    problems: list[str] = []
    if isinstance(example, dict):
        if set(example) in PLACEHOLDER_KEYS:
            (model,) = example.values()
            for key, value in actual.items():
                problems += shape_diff(model, value, f"{path}.{key}" if path else key)
            return problems
        for key, value in example.items():
            where = f"{path}.{key}" if path else key
            if key not in actual:
                problems.append(f"{where}: missing")
            else:
                problems += shape_diff(value, actual[key], where)
    elif isinstance(example, list) and example:
        for i, item in enumerate(actual):
            problems += shape_diff(example[0], item, f"{path}[{i}]")
    return problems


def test_shape_diff() -> None:
    example = {
        "id": "string",
        "tags": {"string": "string"},
        "properties": {"count": 1, "nested": {"flag": False}, "note": None},
        "value": [{"name": "string"}],
    }
    assert shape_diff(example, copy.deepcopy(example)) == []
    actual = {
        "id": 5,
        "tags": {"a": "b", "c": 1},
        "properties": {"count": 2.5, "nested": {}, "note": {"any": "thing"}},
        "value": [{"name": "x"}, {}],
    }
    assert shape_diff(example, actual) == [
        "id: string expected, got number",
        "tags.c: string expected, got number",
        "properties.nested.flag: missing",
        "value[1].name: missing",
    ]


# Key paths (fnmatch patterns over "a.b.c", list items as [*] and a list body's "value[*]." dropped)
# an official example shows and the emulated resources legitimately lack, each with its reason.
OPTIONAL: dict[str, str] = {
    "nextLink": "ARM paging: the last (here only) page has no nextLink",
    "identity.userAssignedIdentities": "present only for a UserAssigned identity; ours are SystemAssigned",
    "properties.description": "optional free text, not set on the emulated resource",
    "properties.*.description": "optional free text of a job input/output, not set by the SDK",
    "sku": "managed online endpoints have no SKU (the SDK sends none)",
    "sku.tier": "optional Sku field; the SDK sends only name and capacity",
    "sku.size": "optional Sku field; the SDK sends only name and capacity",
    "sku.family": "optional Sku field; the SDK sends only name and capacity",
    "identity": "a deployment has no identity unless one is set (the SDK sets none)",
    "properties.compute": "Kubernetes endpoints only",
    "properties.containerResourceRequirements": "KubernetesOnlineDeployment only (the list example is one)",
    "properties.codeConfiguration": "an MLflow model deploys without code (no-code deployment)",
    "properties.environmentId": "an MLflow model deploys without an environment (no-code deployment)",
    "properties.modelMountPath": "custom containers only",
    "properties.expiryTime": "only for a connection that expires; the SDK sets none",
    "properties.credentials.*": "fields depend on authType: the example is AccessKey, ours CustomKeys",
    "properties.encryption*": "customer-managed key workspaces only",
    "properties.managedNetwork*": "managed virtual network isolation only",
    "properties.privateEndpointConnections*": "private link workspaces only",
    "properties.sharedPrivateLinkResources*": "private link workspaces only",
    "properties.containerRegistry": "only once a container registry is attached to the workspace",
    "properties.imageBuildCompute": "only when an image build compute is set",
    "properties.tags.*": "tags are user data: the example's keys are the example's own",
    "properties.computeId": "a fine-tuning job runs on serverless compute: there is no compute id",
    "properties.componentId": "only for jobs made from a registered component",
    "properties.notificationSetting": "only when the submitter asks for e-mails (the SDK sends none)",
    "properties.queueSettings": "only when the submitter sets a job tier (the app sets none)",
}


def unexplained(problems: list[str]) -> list[str]:
    left = []
    for problem in problems:
        where = re.sub(r"\[\d+\]", "[*]", problem.split(": ", 1)[0]).removeprefix("value[*].")
        if not any(fnmatch.fnmatchcase(where, pattern) for pattern in OPTIONAL):
            left.append(problem)
    return left


# --------------------------------------------------------------------------- HTTP helpers


@dataclass
class Arm:
    """Raw ARM calls to the emulator with a managed-identity token."""

    http: httpx.Client
    world: World

    @property
    def ws(self) -> str:
        return self.world.ws_id(self.world.workspaces[0])

    @property
    def region(self) -> str:
        return (
            f"/subscriptions/{self.world.subscription}/providers/Microsoft.MachineLearningServices"
            f"/locations/{self.world.region}"
        )

    def call(self, method: str, path: str, version: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, path, params={"api-version": version}, json=body)

    def follow(self, url: str) -> httpx.Response:
        return self.http.get(url)


@pytest.fixture(scope="session")
def arm_http(aml_server: EmulatorServer) -> Iterator[httpx.Client]:
    assert aml_server.tls is not None and aml_server.emulator is not None
    ca = ssl.create_default_context(cafile=str(aml_server.tls.ca_bundle))
    with httpx.Client(base_url=aml_server.url, verify=ca, timeout=10) as client:
        answer = client.get(
            "/msi/token",
            params={"api-version": "2019-08-01", "resource": aml_server.url},
            headers={IDENTITY_HEADER: aml_server.emulator.identity_header},
        )
        assert answer.status_code == 200
        assert answer.json()["token_type"] == "Bearer"
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


@pytest.fixture
def arm(arm_http: httpx.Client, aml_world: World) -> Arm:
    return Arm(arm_http, aml_world)


# Request bodies as azure-ai-ml 1.35.2 sends them (through backends.azureml).
def sdk_job_body(name: str) -> dict[str, Any]:
    return {
        "properties": {
            "displayName": name,
            "experimentName": "phi3-ft",
            "tags": {"created-by": "finetune-app"},
            "properties": {},
            "fineTuningDetails": {
                "taskType": "chatCompletion",
                "model": {
                    "uri": f"azureml://registries/azureml/models/{PHI3}/versions/15",
                    "jobInputType": "mlflow_model",
                },
                "modelProvider": "Custom",
                "trainingData": {
                    "uri": "azureml://datastores/ds/paths/train.jsonl",
                    "jobInputType": "uri_file",
                },
                "validationData": {
                    "uri": "azureml://datastores/ds/paths/val.jsonl",
                    "jobInputType": "uri_file",
                },
                "hyperParameters": {"learning_rate": "0.00002", "num_train_epochs": "1"},
            },
            "isArchived": False,
            "outputs": {"registered_model": {"assetName": "phi3-ft", "jobOutputType": "mlflow_model"}},
            "jobType": "FineTuning",
            "resources": {"instanceTypes": [A100]},
        }
    }


def sdk_endpoint_body(
    tags: dict[str, str] | None = None, traffic: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "location": "eastus2",
        "properties": {"authMode": "Key", "properties": {}, "traffic": traffic or {}, "mirrorTraffic": {}},
        "identity": {"type": "SystemAssigned"},
        "tags": tags or {"created-by": "finetune-app"},
    }


def sdk_model_body(uri: str) -> dict[str, Any]:
    return {
        "properties": {
            "description": f"Fine-tuned by Azure ML job {JOB}",
            "tags": {"created-by": "finetune-app"},
            "properties": {},
            "modelType": "mlflow_model",
            "modelUri": uri,
            "isAnonymous": False,
            "isArchived": False,
        }
    }


def sdk_deployment_body(model_id: str, probe: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "model": model_id,
        "properties": {},
        "environmentVariables": {},
        "appInsightsEnabled": False,
        "requestSettings": {"requestTimeout": "PT1M30S"},
        "instanceType": A100,
        "endpointComputeType": "Managed",
    }
    if probe is not None:
        props["livenessProbe"] = probe
        props["readinessProbe"] = probe
    return {"location": "eastus2", "properties": props, "tags": {}, "sku": {"name": "Default", "capacity": 1}}


def create_endpoint(arm: Arm, name: str = ENDPOINT) -> None:
    """PUT the endpoint and poll its operation to Succeeded."""
    put = arm.call("PUT", f"{arm.ws}/onlineEndpoints/{name}", ENDPOINT_V, sdk_endpoint_body())
    assert put.status_code == 201, put.text
    poll_until_done(arm, put.headers["Azure-AsyncOperation"])


def create_model(arm: Arm, name: str = MODEL, version: str = "1") -> str:
    put = arm.call(
        "PUT",
        f"{arm.ws}/models/{name}/versions/{version}",
        MODEL_V,
        sdk_model_body(f"azureml://jobs/{JOB}/outputs/registered_model"),
    )
    assert put.status_code == 201, put.text
    return f"{arm.ws}/models/{name}/versions/{version}"


def create_deployment(
    arm: Arm, name: str, model_id: str, probe: dict[str, Any] | None = None, endpoint: str = ENDPOINT
) -> httpx.Response:
    put = arm.call(
        "PUT",
        f"{arm.ws}/onlineEndpoints/{endpoint}/deployments/{name}",
        DEPLOYMENT_V,
        sdk_deployment_body(model_id, probe),
    )
    assert put.status_code == 201, put.text
    return put


def poll_until_done(arm: Arm, url: str, limit: int = 10) -> list[dict[str, Any]]:
    seen = []
    for _ in range(limit):
        answer = arm.follow(url)
        assert answer.status_code == 200, answer.text
        seen.append(answer.json())
        if answer.json()["status"] != "InProgress":
            return seen
    raise AssertionError(f"operation still in progress after {limit} polls: {seen}")


def populate(arm: Arm) -> None:
    """One of everything the read routes serve: job, model, endpoint, deployment, connection."""
    assert arm.call("PUT", f"{arm.ws}/jobs/{JOB}", JOB_V, sdk_job_body(JOB)).status_code == 201
    model_id = create_model(arm)
    create_endpoint(arm)
    put = create_deployment(arm, DEPLOYMENT, model_id)
    poll_until_done(arm, put.headers["Azure-AsyncOperation"])
    connection = copy.deepcopy(SDK_CONNECTION_BODY)
    assert arm.call("PUT", f"{arm.ws}/connections/{CONNECTION}", CONNECTION_V, connection).status_code == 200


# --------------------------------------------------------------------------- 3. fidelity


@dataclass(frozen=True)
class Route:
    version: str
    example: str
    method: str
    path: Callable[[Arm], str]

    @property
    def id(self) -> str:
        return f"{self.version}/{self.example}"


REGISTRY_VERSIONS = (
    f"/mferp/managementfrontend/subscriptions/{REGISTRY_SUBSCRIPTION}/resourceGroups/{REGISTRY_RESOURCE_GROUP}"
    f"/providers/Microsoft.MachineLearningServices/registries/azureml/models/{PHI3}/versions"
)

ROUTES = {
    "job-get": Route(JOB_V, "Job/FineTuningJob/get.json", "GET", lambda a: f"{a.ws}/jobs/{JOB}"),
    "endpoint-get": Route(
        ENDPOINT_V, "OnlineEndpoint/get.json", "GET", lambda a: f"{a.ws}/onlineEndpoints/{ENDPOINT}"
    ),
    "endpoint-get-2023": Route(
        DEPLOYMENT_V,
        "Workspace/OnlineEndpoint/get.json",
        "GET",
        lambda a: f"{a.ws}/onlineEndpoints/{ENDPOINT}",
    ),
    "endpoint-list": Route(
        ENDPOINT_V, "OnlineEndpoint/list.json", "GET", lambda a: f"{a.ws}/onlineEndpoints"
    ),
    "deployment-get": Route(
        DEPLOYMENT_V,
        "OnlineDeployment/ManagedOnlineDeployment/get.json",
        "GET",
        lambda a: f"{a.ws}/onlineEndpoints/{ENDPOINT}/deployments/{DEPLOYMENT}",
    ),
    "deployment-list": Route(
        DEPLOYMENT_V,
        "OnlineDeployment/list.json",
        "GET",
        lambda a: f"{a.ws}/onlineEndpoints/{ENDPOINT}/deployments",
    ),
    "model-version-get": Route(
        MODEL_V, "Workspace/ModelVersion/get.json", "GET", lambda a: f"{a.ws}/models/{MODEL}/versions/1"
    ),
    "model-version-list": Route(
        MODEL_V, "Workspace/ModelVersion/list.json", "GET", lambda a: f"{a.ws}/models/{MODEL}/versions"
    ),
    "model-container-get": Route(
        MODEL_V, "Workspace/ModelContainer/get.json", "GET", lambda a: f"{a.ws}/models/{MODEL}"
    ),
    "model-container-list": Route(
        MODEL_V, "Workspace/ModelContainer/list.json", "GET", lambda a: f"{a.ws}/models"
    ),
    "registry-version-list": Route(
        MODEL_V, "Registry/ModelVersion/list.json", "GET", lambda a: REGISTRY_VERSIONS
    ),
    # No registry get example is kept: the createOrUpdate example's 200 body is a ModelVersionResource.
    "registry-version-get": Route(
        MODEL_V, "Registry/ModelVersion/createOrUpdate.json", "GET", lambda a: f"{REGISTRY_VERSIONS}/15"
    ),
    "connection-get": Route(
        CONNECTION_V, "WorkspaceConnection/get.json", "GET", lambda a: f"{a.ws}/connections/{CONNECTION}"
    ),
    "connection-listsecrets": Route(
        CONNECTION_V,
        "WorkspaceConnection/listSecrets.json",
        "POST",
        lambda a: f"{a.ws}/connections/{CONNECTION}/listsecrets",
    ),
    "usages": Route(MODEL_V, "Usage/list.json", "GET", lambda a: f"{a.region}/usages"),
    "vm-sizes": Route(MODEL_V, "VirtualMachineSize/list.json", "GET", lambda a: f"{a.region}/vmSizes"),
    "workspace-get": Route(WORKSPACE_V, "Workspace/get.json", "GET", lambda a: a.ws),
}

# Example fields the emulator does not answer and no OPTIONAL reason explains: emulator bugs,
# kept as strict xfails until fixed (none left).
SHAPE_GAPS: dict[str, str] = {}


def _route_params(xfails: dict[str, str]) -> list[Any]:
    return [
        pytest.param(key, marks=pytest.mark.xfail(strict=True, reason=xfails[key])) if key in xfails else key
        for key in ROUTES
    ]


def _read(arm: Arm, route: Route) -> httpx.Response:
    populate(arm)
    return arm.call(route.method, route.path(arm), route.version)


def _operation(validator: RequestValidator, route: Route, path: str) -> Any:
    return validator.find(route.method, path.removeprefix("/mferp/managementfrontend"), route.version)


@pytest.mark.parametrize("key", list(ROUTES))
def test_answers_a_declared_status(arm: Arm, validator: RequestValidator, key: str) -> None:
    route = ROUTES[key]
    answer = _read(arm, route)
    example = load_example(route.version, route.example)
    assert str(answer.status_code) in example["responses"], answer.text
    op = _operation(validator, route, route.path(arm))
    if key == "workspace-get":
        assert op is None  # Workspaces_Get is not kept: the example is the only reference
    else:
        assert op is not None, f"no kept operation for {route.method} {route.path(arm)}"
        assert str(answer.status_code) in op.spec["responses"]


@pytest.mark.parametrize("key", _route_params(SHAPE_GAPS))
def test_answer_has_the_official_examples_shape(arm: Arm, key: str) -> None:
    route = ROUTES[key]
    answer = _read(arm, route)
    assert answer.status_code == 200, answer.text
    example = load_example(route.version, route.example)["responses"]["200"]["body"]
    body = answer.json()
    if "value" in example:
        assert body["value"], "a list compared against an example needs at least one item"
    assert unexplained(shape_diff(example, body)) == []


RESPONSE_SCHEMA_GAPS = {
    "definition's wire name is 'amlWorkspaceLocation' (azure-ai-ml's REST model: "
    'rest_field(name="amlWorkspaceLocation")), so the SDK reads None',
}


@pytest.mark.parametrize("key", [k for k in _route_params(RESPONSE_SCHEMA_GAPS) if k != "workspace-get"])
def test_answer_holds_only_declared_properties(arm: Arm, validator: RequestValidator, key: str) -> None:
    """The answer, read with the validator's rules against the operation's 200 schema: no
    undeclared field, right types and formats (uses the validator's internal checker)."""
    route = ROUTES[key]
    answer = _read(arm, route)
    op = _operation(validator, route, route.path(arm))
    schema = op.spec["responses"][str(answer.status_code)]["schema"]
    checker = openapi._Checker(validator.specs, route.version)
    assert checker.check(schema, answer.json(), Path(op.file), "response") == []


# --------------------------------------------------------------------------- 4. the ARM envelope


def _arm_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert answer.headers["x-ms-error-code"] == code
    return error


@pytest.mark.parametrize("token", [None, "Bearer not-issued-here", "Basic dXNlcjpwYXNz"])
def test_no_or_unknown_bearer_token_is_401(arm: Arm, token: str | None) -> None:
    headers = {"Authorization": token} if token else {}
    request = arm.http.build_request("GET", f"{arm.ws}/jobs/{JOB}", params={"api-version": JOB_V})
    request.headers.pop("Authorization")
    request.headers.update(headers)
    _arm_error(arm.http.send(request), 401, "AuthenticationFailed")


def test_a_token_for_another_audience_is_refused(arm: Arm, aml_server: EmulatorServer) -> None:
    """ARM and the workspace's data plane take tokens for this cloud's resource manager only."""
    answer = arm.http.get(
        "/msi/token",
        params={"api-version": "2019-08-01", "resource": "https://management.azure.com/"},
        headers={IDENTITY_HEADER: aml_server.emulator.identity_header},
    )
    token = answer.json()["access_token"]
    refused = arm.http.get(
        f"{arm.ws}/onlineEndpoints",
        params={"api-version": ENDPOINT_V},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 401
    assert "audience 'https://management.azure.com'" in refused.json()["error"]["message"]
    forged = arm.http.get(
        f"{arm.ws}/onlineEndpoints",
        params={"api-version": ENDPOINT_V},
        headers={"Authorization": f"Bearer {token[:-4]}AAAA"},
    )
    assert forged.status_code == 401


def test_msi_route_refuses_a_wrong_identity_header(arm: Arm) -> None:
    answer = arm.http.get(
        "/msi/token", params={"api-version": "2019-08-01", "resource": "x"}, headers={IDENTITY_HEADER: "nope"}
    )
    assert answer.status_code == 401


def test_injected_429_has_retry_after_and_an_arm_error(arm: Arm) -> None:
    arm.world.inject(
        Fault(path="/onlineEndpoints", status=429, code="TooManyRequests", retry_after=7, method="PUT")
    )
    assert arm.call("GET", f"{arm.ws}/onlineEndpoints", ENDPOINT_V).status_code == 200  # GET not matched
    answer = arm.call("PUT", f"{arm.ws}/onlineEndpoints/{ENDPOINT}", ENDPOINT_V, sdk_endpoint_body())
    _arm_error(answer, 429, "TooManyRequests")
    assert answer.headers["Retry-After"] == "7"
    assert ENDPOINT not in {n for _, n in arm.world.endpoints}, "a fault answers before the route runs"
    # Consumed: the retry goes through.
    again = arm.call("PUT", f"{arm.ws}/onlineEndpoints/{ENDPOINT}", ENDPOINT_V, sdk_endpoint_body())
    assert again.status_code == 201


def test_injected_503_fault_repeats_times(arm: Arm) -> None:
    arm.world.inject(Fault(path=f"/jobs/{JOB}", status=503, code="ServiceUnavailable", times=2))
    for _ in range(2):
        answer = arm.call("GET", f"{arm.ws}/jobs/{JOB}", JOB_V)
        _arm_error(answer, 503, "ServiceUnavailable")
        assert "Retry-After" not in answer.headers
    _arm_error(arm.call("GET", f"{arm.ws}/jobs/{JOB}", JOB_V), 404, "ResourceNotFound")


def test_missing_resources_are_404_resource_not_found(arm: Arm) -> None:
    error = _arm_error(arm.call("GET", f"{arm.ws}/jobs/no-such-job", JOB_V), 404, "ResourceNotFound")
    assert "no-such-job" in error["message"]
    for path, version in [
        (f"{arm.ws}/onlineEndpoints/no-such-ep", ENDPOINT_V),
        (f"{arm.ws}/models/no-such-model/versions/1", MODEL_V),
        (f"{arm.ws}/connections/no-such-conn", CONNECTION_V),
        (arm.ws.replace("ws-emulator", "ws-other"), WORKSPACE_V),
    ]:
        _arm_error(arm.call("GET", path, version), 404, "ResourceNotFound")


def test_an_invalid_body_gets_the_services_400(arm: Arm, aml_server: EmulatorServer) -> None:
    body = sdk_job_body(JOB)
    body["properties"]["bogus"] = True
    error = _arm_error(arm.call("PUT", f"{arm.ws}/jobs/{JOB}", JOB_V, body), 400, "UserError")
    assert "body.properties.bogus: not a property of FineTuningJob" in error["message"]
    assert not arm.world.jobs
    assert aml_server.emulator is not None
    errors = aml_server.emulator.validation_errors
    assert errors == [
        f"PUT {arm.ws}/jobs/{JOB} {JOB_V}: body.properties.bogus: not a property of FineTuningJob"
    ]
    errors.clear()  # deliberate: the fixture fails a test whose requests the service would reject


def test_endpoint_put_is_a_long_running_operation(arm: Arm, validator: RequestValidator) -> None:
    path = f"{arm.ws}/onlineEndpoints/{ENDPOINT}"
    put = arm.call("PUT", path, ENDPOINT_V, sdk_endpoint_body())
    assert put.status_code == 201
    declared = validator.find("PUT", path, ENDPOINT_V)
    assert declared is not None and "Azure-AsyncOperation" in declared.spec["responses"]["201"]["headers"]
    assert put.json()["properties"]["provisioningState"] == "Creating"
    status_url = put.headers["Azure-AsyncOperation"]
    assert status_url.startswith(f"{str(arm.http.base_url).rstrip('/')}{arm.region}/mfeOperationsStatus/")
    assert f"api-version={ENDPOINT_V}" in status_url
    assert [s["status"] for s in poll_until_done(arm, status_url)] == ["InProgress", "Succeeded"]
    got = arm.call("GET", f"{arm.ws}/onlineEndpoints/{ENDPOINT}", ENDPOINT_V).json()
    assert got["properties"]["provisioningState"] == "Succeeded"
    # The same PUT again is an update (traffic, tags): it completes in the PUT, 200 with a terminal
    # provisioningState and no operation to poll, so the SDK's `.result()` returns at once.
    again = arm.call("PUT", f"{arm.ws}/onlineEndpoints/{ENDPOINT}", ENDPOINT_V, sdk_endpoint_body({"v": "2"}))
    assert again.status_code == 200
    assert "Azure-AsyncOperation" not in again.headers
    assert again.json()["properties"]["provisioningState"] == "Succeeded"


def test_unknown_operation_is_404(arm: Arm) -> None:
    answer = arm.http.get(f"{arm.region}/mfeOperationsStatus/op-nope", params={"api-version": ENDPOINT_V})
    _arm_error(answer, 404, "ResourceNotFound")


def test_scripted_deployment_failure_surfaces_in_the_operation(arm: Arm) -> None:
    model_id = create_model(arm)
    create_endpoint(arm)
    arm.world.script_deployment(
        "broken", DeploymentScript(outcome="Failed", error=("ImagePullFailure", "no image"))
    )
    put = create_deployment(arm, "broken", model_id)
    assert put.json()["properties"]["provisioningState"] == "Creating"
    statuses = poll_until_done(arm, put.headers["Azure-AsyncOperation"])
    assert [s["status"] for s in statuses] == ["InProgress", "Failed"]
    assert statuses[-1]["error"] == {"code": "ImagePullFailure", "message": "no image"}
    got = arm.call("GET", f"{arm.ws}/onlineEndpoints/{ENDPOINT}/deployments/broken", DEPLOYMENT_V)
    assert got.json()["properties"]["provisioningState"] == "Failed"


@pytest.mark.parametrize(
    ("probe", "outcome"),
    [
        (None, "Failed"),  # default probes: 10 s + 30 x 10 s = 310 s < 420 s
        ({"initialDelay": "PT10M"}, "Succeeded"),  # 600 s + 30 x 10 s = 900 s
    ],
)
def test_slow_model_load_against_the_liveness_probe(
    arm: Arm, probe: dict[str, Any] | None, outcome: str
) -> None:
    model_id = create_model(arm)
    create_endpoint(arm)
    arm.world.script_deployment("slow", DeploymentScript(load_seconds=420))
    put = create_deployment(arm, "slow", model_id, probe)
    final = poll_until_done(arm, put.headers["Azure-AsyncOperation"])[-1]
    assert final["status"] == outcome
    if outcome == "Failed":
        assert final["error"]["code"] == "ResourceNotReady"
        assert "liveness probe failed after 310 s" in final["error"]["message"]
        assert "initialDelay" in final["error"]["message"]
    else:
        assert "error" not in final
    got = arm.call("GET", f"{arm.ws}/onlineEndpoints/{ENDPOINT}/deployments/slow", DEPLOYMENT_V).json()
    assert got["properties"]["provisioningState"] == outcome
    assert got["properties"]["livenessProbe"]["initialDelay"] == (probe or {}).get("initialDelay", "PT10S")


def test_endpoint_name_taken_in_the_region_is_400(arm: Arm) -> None:
    arm.world.foreign_endpoints.add("ep-taken")
    answer = arm.call("PUT", f"{arm.ws}/onlineEndpoints/ep-taken", ENDPOINT_V, sdk_endpoint_body())
    error = _arm_error(answer, 400, "UserError")
    assert "unique within the region" in error["message"]
    assert not arm.world.endpoints


def test_traffic_naming_an_unknown_deployment_is_400(arm: Arm) -> None:
    create_endpoint(arm)
    body = sdk_endpoint_body(traffic={"ghost": 100})
    error = _arm_error(
        arm.call("PUT", f"{arm.ws}/onlineEndpoints/{ENDPOINT}", ENDPOINT_V, body), 400, "UserError"
    )
    assert "ghost" in error["message"]
    got = arm.call("GET", f"{arm.ws}/onlineEndpoints/{ENDPOINT}", ENDPOINT_V).json()
    assert got["properties"]["traffic"] == {}


def test_deleting_a_deployment_with_traffic_is_400(arm: Arm) -> None:
    model_id = create_model(arm)
    create_endpoint(arm)
    poll_until_done(arm, create_deployment(arm, DEPLOYMENT, model_id).headers["Azure-AsyncOperation"])
    update = arm.call(
        "PUT",
        f"{arm.ws}/onlineEndpoints/{ENDPOINT}",
        ENDPOINT_V,
        sdk_endpoint_body(traffic={DEPLOYMENT: 100}),
    )
    assert update.status_code == 200
    assert update.status_code == 200 and "Azure-AsyncOperation" not in update.headers
    path = f"{arm.ws}/onlineEndpoints/{ENDPOINT}/deployments/{DEPLOYMENT}"
    error = _arm_error(arm.call("DELETE", path, DEPLOYMENT_V), 400, "UserError")
    assert "traffic" in error["message"]
    assert arm.call("GET", path, DEPLOYMENT_V).json()["properties"]["provisioningState"] == "Succeeded"
    # With its traffic at 0 it goes: 202 + Location, then 404.
    zero = arm.call(
        "PUT", f"{arm.ws}/onlineEndpoints/{ENDPOINT}", ENDPOINT_V, sdk_endpoint_body(traffic={DEPLOYMENT: 0})
    )
    assert zero.status_code == 200 and zero.json()["properties"]["traffic"] == {DEPLOYMENT: 0}
    delete = arm.call("DELETE", path, DEPLOYMENT_V)
    assert delete.status_code == 202
    assert "Location" in delete.headers
    assert poll_until_done(arm, delete.headers["Azure-AsyncOperation"])[-1]["status"] == "Succeeded"
    _arm_error(arm.call("GET", path, DEPLOYMENT_V), 404, "ResourceNotFound")


def test_job_status_follows_its_script_one_status_per_get(arm: Arm) -> None:
    arm.world.script_job(JOB, JobScript(statuses=("Queued", "Preparing", "Running", "Completed")))
    put = arm.call("PUT", f"{arm.ws}/jobs/{JOB}", JOB_V, sdk_job_body(JOB))
    assert put.status_code == 201
    assert put.json()["properties"]["status"] == "NotStarted"
    seen = [arm.call("GET", f"{arm.ws}/jobs/{JOB}", JOB_V).json()["properties"]["status"] for _ in range(5)]
    assert seen == ["Queued", "Preparing", "Running", "Completed", "Completed"]
    # Completing registers the job's registered_model output (assetName), as the service does.
    versions = arm.call("GET", f"{arm.ws}/models/phi3-ft/versions", MODEL_V).json()["value"]
    assert [v["properties"]["jobName"] for v in versions] == [JOB]


def _cancel(arm: Arm) -> httpx.Response:
    return arm.call("POST", f"{arm.ws}/jobs/{JOB}/cancel", CANCEL_V)


def test_cancel_ends_canceled_and_stays_there(arm: Arm, validator: RequestValidator) -> None:
    arm.world.script_job(JOB, JobScript(statuses=("Running",)))
    assert arm.call("PUT", f"{arm.ws}/jobs/{JOB}", JOB_V, sdk_job_body(JOB)).status_code == 201
    assert arm.call("GET", f"{arm.ws}/jobs/{JOB}", JOB_V).json()["properties"]["status"] == "Running"
    cancel = _cancel(arm)
    assert cancel.status_code == 202
    declared = validator.find("POST", f"{arm.ws}/jobs/{JOB}/cancel", CANCEL_V)
    assert declared is not None and "Location" in declared.spec["responses"]["202"]["headers"]
    assert arm.follow(cancel.headers["Location"]).status_code == 200
    seen = [arm.call("GET", f"{arm.ws}/jobs/{JOB}", JOB_V).json()["properties"]["status"] for _ in range(3)]
    assert seen[-2:] == ["Canceled", "Canceled"]
    _arm_error(_cancel(arm), 400, "UserError")  # terminal now


def test_cancel_goes_cancel_requested_then_canceled(arm: Arm) -> None:
    arm.world.script_job(JOB, JobScript(statuses=("Running",)))
    assert arm.call("PUT", f"{arm.ws}/jobs/{JOB}", JOB_V, sdk_job_body(JOB)).status_code == 201
    assert arm.call("GET", f"{arm.ws}/jobs/{JOB}", JOB_V).json()["properties"]["status"] == "Running"
    assert _cancel(arm).status_code == 202
    seen = [arm.call("GET", f"{arm.ws}/jobs/{JOB}", JOB_V).json()["properties"]["status"] for _ in range(2)]
    assert seen == ["CancelRequested", "Canceled"]


def test_model_container_next_version_is_free(arm: Arm) -> None:
    create_model(arm, version="1")
    create_model(arm, version="3")
    container = arm.call("GET", f"{arm.ws}/models/{MODEL}", MODEL_V).json()
    assert container["properties"]["latestVersion"] == "3"
    assert container["properties"]["nextVersion"] == "4"


def test_model_container_list_follows_list_view_type(arm: Arm) -> None:
    create_model(arm, name="kept")
    create_model(arm, name="gone")
    body = sdk_model_body(f"azureml://jobs/{JOB}/outputs/registered_model")
    body["properties"]["isArchived"] = True
    archive = arm.call("PUT", f"{arm.ws}/models/gone/versions/1", MODEL_V, body)
    assert archive.status_code == 200, archive.text

    def names(view: str | None) -> list[str]:
        params = {"api-version": MODEL_V, **({"listViewType": view} if view else {})}
        return [c["name"] for c in arm.http.get(f"{arm.ws}/models", params=params).json()["value"]]

    assert names(None) == names("ActiveOnly") == ["kept"]
    assert names("ArchivedOnly") == ["gone"]
    assert names("All") == ["gone", "kept"]
