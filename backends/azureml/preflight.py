"""Preflight on Azure ML: read-only checks that a run can start (backends/base.py
`PreflightBackend`): the base model in its registry, the VM sizes of the workspace region and
the base model's allow-lists, the dedicated vCPU quota, and the endpoint name's owner.

A permanent failure of a read (not found, another 4xx) becomes a failed check saying what could
not be read and why (`client_fault`); anything transient propagates for the activity retry.
Nothing is created.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from azure.ai.ml.entities import Model
from azure.core.exceptions import ResourceNotFoundError

from backends.azureml.workspace import AzureWorkspace, client_fault
from core.models import RunConfig
from core.naming import APP_TAG
from core.preflight import PreflightCheck, PreflightReport, endpoint_name_check

log = logging.getLogger(__name__)

ENDPOINT_PROBE_TIMEOUT_S = 10.0
_T = TypeVar("_T")

# How a person raises a VM-family quota: the seed tutorial's steps (Azure ML studio → Quota → the
# "<family> Cluster Dedicated vCPUs" row → Request quota → New cores limit → Submit).
QUOTA_HOWTO = (
    "request more in Azure ML studio (https://ml.azure.com) → Quota → select '{usage}' → "
    "Request quota with a new cores limit of at least {limit}, then start the run again"
)
# Managed online deployments draw on the same Azure ML dedicated VM-family quota as training and
# hold 20 % extra for upgrades: ceil(1.2 × instances) × vCPUs of the size must be free (Azure ML
# docs, how-to-manage-quotas: "Virtual machine quota allocation for deployment"), except for the
# sizes the "Managed online endpoints SKU list" marks "Skip 20% Reservation" (listed here).
RESERVE_EXEMPT_SIZES = frozenset(
    {
        "standard_nc24ads_a100_v4",
        "standard_nc48ads_a100_v4",
        "standard_nc96ads_a100_v4",
        "standard_nc40ads_h100_v5",
        "standard_nc80adis_h100_v5",
        "standard_nd96amsr_a100_v4",
        "standard_nd96asr_v4",
        "standard_nd40rs_v2",
        "standard_nd96is_h100_v5",
        "standard_nd96isr_h100_v5",
    }
)
# Model tag by which the azureml registry lists the VM sizes fine-tuning of a foundation model
# supports (a Python-literal list of size names; the Phi-3 cookbook reads it the same way).
FINETUNE_ALLOW_LIST_TAG = "finetune_compute_allow_list"
# ... and the sizes it can be served on (the same tag family; Azure/azureml-assets spec.yaml).
INFERENCE_ALLOW_LIST_TAG = "inference_compute_allow_list"
# 4xx answers that are worth retrying (the activity retry policy does it): not check failures.
_DEDICATED_SUFFIX = "clusterdedicatedvcpus"
_TOTAL_DEDICATED = "totalclusterdedicatedregionalvcpus"
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_VM_SIZE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _field(obj: Any, *names: str) -> Any:
    """The first of `names` that `obj` has (attribute or mapping key) with a value, else None.

    azure-ai-ml 1.35 builds `VmSize` and `Usage` with `__dict__.update(rest.as_dict())`
    (entities/_compute/_vm_size.py:72, entities/_compute/_usage.py:70), and the REST models'
    `as_dict()` uses the wire names: the documented snake_case attributes stay None while the
    values sit under `vCPUs`, `currentValue`, `supportedComputeTypes`, and `name` is a plain dict
    `{"value", "localizedValue"}`. Reading both spellings stays right if a later SDK fixes this.
    """
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _flat(text: str) -> str:
    return _NON_ALNUM.sub("", text.lower())


def family_key(text: str) -> str:
    """The VM family a size family or a quota (usage) name refers to, normalised for comparison.

    Rule: lower-case and keep only letters and digits; then drop a trailing
    "clusterdedicatedvcpus" (usage names), a trailing "family" and a leading "standard".
    The size family "standardNCADSA100v4Family" (`list_sizes`), the usage name "Standard
    NCADSA100v4 Family Cluster Dedicated vCPUs" (`list_usage`) and the tutorial's "Standard
    NCADSA100v4 Family" all become "ncadsa100v4"; "standard NCASv3_T4 Family" and "Standard
    NCASv3_T4 Family Cluster Dedicated vCPUs" become "ncasv3t4". Keys are compared whole, so
    related families stay apart ("nc", "ncv3", "ncsv3").
    """
    key = _flat(text).removesuffix(_DEDICATED_SUFFIX).removesuffix("family")
    return key.removeprefix("standard")


def _usage_names(usage: Any) -> list[str]:
    """The usage's name and localised name (`name` is a dict or a `UsageName`)."""
    name = _field(usage, "name")
    if name is None:
        return []
    if isinstance(name, str):
        return [name]
    values = (_field(name, "value"), _field(name, "localized_value", "localizedValue"))
    return [str(v) for v in values if v]


def _usage_label(usage: Any) -> str:
    names = _usage_names(usage)
    return names[-1] if names else "?"


def _usage_in_scope(usage: Any, workspace: str) -> bool:
    """Subscription-wide rows and this workspace's rows count; per-compute rows (a breakdown of the
    same usage) and other workspaces' rows do not (see the REST example Usage/list.json)."""
    kind = str(_field(usage, "type") or "").lower()
    rid = str(_field(usage, "id") or "").lower()
    if "/computes" in kind or "/computes/" in rid:
        return False
    if "/workspaces/" in rid:
        return f"/workspaces/{workspace.lower()}/" in rid
    return True


def _dedicated(usage: Any) -> bool:
    return not any("lowpriority" in _flat(n) or "spot" in _flat(n) for n in _usage_names(usage))


def family_usages(usages: Iterable[Any], family: str, workspace: str) -> list[Any]:
    """The dedicated-vCPU quota rows of `family` that bind this workspace (see `family_key`)."""
    want = family_key(family)
    if not want:
        return []
    return [
        u
        for u in usages
        if _dedicated(u)
        and _usage_in_scope(u, workspace)
        and any(family_key(n) == want for n in _usage_names(u))
    ]


def total_usages(usages: Iterable[Any], workspace: str) -> list[Any]:
    """The "Total Cluster Dedicated Regional vCPUs" rows: the regional cap across all families."""
    return [
        u
        for u in usages
        if _usage_in_scope(u, workspace) and any(_flat(n) == _TOTAL_DEDICATED for n in _usage_names(u))
    ]


def quota_check(
    name: str,
    *,
    instance_type: str,
    size: Any,
    instances: int,
    serving: bool,
    usages: list[Any],
    region: str,
    workspace: str,
) -> PreflightCheck:
    """Does the dedicated vCPU quota (usage vs limit) of the size's family, and the regional total,
    leave room for `instances` of `instance_type`? A negative limit means "no limit"."""
    vcpus = _as_int(_field(size, "v_cp_us", "vCPUs"))
    family = str(_field(size, "family") or "")
    if not vcpus or not family:
        return PreflightCheck(
            name=name,
            ok=False,
            detail=f"Azure ML reports no vCPU count or VM family for {instance_type} in {region}: "
            "quota cannot be checked; pick another instance type",
        )
    counted = instances
    basis = f"{instances} × {instance_type} at {vcpus} vCPUs"
    if serving and instance_type.lower() not in RESERVE_EXEMPT_SIZES:
        counted = -(-instances * 6 // 5)  # ceil(1.2 × instances), in integers
        basis = (
            f"{instances} instance(s) of {instance_type} at {vcpus} vCPUs plus the 20 % upgrade reserve of "
            f"managed online deployments ({counted} × {vcpus})"
        )
    needed = counted * vcpus

    rows = family_usages(usages, family, workspace)
    if not rows:
        core = re.sub(r"(?i)^\s*standard|family\s*$", "", family).strip(" _")
        usage = f"Standard {core} Family Cluster Dedicated vCPUs"  # as Azure ML studio's Quota page names it
        return PreflightCheck(
            name=name,
            ok=False,
            detail=f"no dedicated vCPU quota for the {family} family (of {instance_type}) in {region}; "
            f"{needed} vCPUs needed for {basis}: " + QUOTA_HOWTO.format(usage=usage, limit=needed),
        )

    short: list[str] = []
    tightest: tuple[int, int, int, str] | None = None  # (free, current, limit, label)
    for row in [*rows, *total_usages(usages, workspace)]:
        limit = _as_int(_field(row, "limit"))
        current = _as_int(_field(row, "current_value", "currentValue")) or 0
        if limit is None or limit < 0:
            continue
        free = limit - current
        label = _usage_label(row)
        if tightest is None or free < tightest[0]:
            tightest = (free, current, limit, label)
        if free < needed:
            short.append(
                f"{label} in {region}: {current} of {limit} in use, {max(free, 0)} free, {needed} needed "
                f"for {basis}; " + QUOTA_HOWTO.format(usage=label, limit=current + needed)
            )
    if short:
        return PreflightCheck(name=name, ok=False, detail="; also ".join(dict.fromkeys(short)))
    if tightest is None:
        return PreflightCheck(
            name=name, ok=True, detail=f"no vCPU limit on the {family} family in {region} ({basis})"
        )
    free, current, limit, label = tightest
    return PreflightCheck(
        name=name,
        ok=True,
        detail=f"{label} in {region}: {free} of {limit} vCPUs free, {needed} needed for {basis}",
    )


def allow_list(model: Any, tag: str) -> list[str] | None:
    """The VM sizes a registry model's `tag` (FINETUNE_ALLOW_LIST_TAG or INFERENCE_ALLOW_LIST_TAG)
    allows, or None if it does not say. The service returns the list as a Python-literal string
    ("['Standard_NC24ads_A100_v4', ...]", read with ast.literal_eval as the Phi-3 cookbook does);
    the bare form of the asset's spec.yaml ("[Standard_NC24ads_A100_v4, ...]") is read too."""
    raw = (getattr(model, "tags", None) or {}).get(tag)
    if not raw:
        return None
    items: Any = raw
    if isinstance(raw, str):
        try:
            items = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            bare = raw.strip()
            if not (bare.startswith("[") and bare.endswith("]")):
                return None
            items = [part.strip(" '\"") for part in bare[1:-1].split(",")]
            if not all(_VM_SIZE.match(i) for i in items):
                return None
    if not isinstance(items, list | tuple):
        return None
    names = [i for i in items if isinstance(i, str) and i]
    return None if not names or "*" in names else names


def finetune_allow_list(model: Any) -> list[str] | None:
    """The VM sizes the registry says fine-tuning of `model` supports, or None if it does not say."""
    return allow_list(model, FINETUNE_ALLOW_LIST_TAG)


def _instance_check(
    name: str,
    *,
    instance_type: str,
    size: Any,
    region: str,
    workspace: str,
    setting: str,
    allow: list[str] | None = None,
) -> PreflightCheck:
    """Is `instance_type` among the VM sizes Azure ML offers in `region` (and, for training, among
    the sizes the base model supports fine-tuning on, when the registry says)?"""
    problems: list[str] = []
    if size is None:
        problems.append(
            f"{instance_type} is not offered by Azure ML in {region} (the region of workspace {workspace}): "
            f"check {setting} and the size's availability in {region} "
            f"(`az ml compute list-sizes --location {region}`), or use another instance type or a "
            "workspace in another region"
        )
    if allow is not None and instance_type.lower() not in {a.lower() for a in allow}:
        tag, purpose = (
            (INFERENCE_ALLOW_LIST_TAG, "serving")
            if setting == "SERVING_INSTANCE_TYPE"
            else (FINETUNE_ALLOW_LIST_TAG, "fine-tuning")
        )
        problems.append(
            f"{instance_type} is not supported by the base model for {purpose}; it supports "
            f"{', '.join(allow)} (its {tag} tag): set {setting} to one of them"
        )
    if problems:
        return PreflightCheck(name=name, ok=False, detail="; ".join(problems))
    vcpus = _field(size, "v_cp_us", "vCPUs")
    gpus = _field(size, "gpus")
    family = _field(size, "family")
    return PreflightCheck(
        name=name,
        ok=True,
        detail=f"{instance_type} is available in {region} ({vcpus} vCPUs, {gpus} GPU(s), family {family})",
    )


@dataclass(frozen=True)
class Unreadable:
    """A read that failed for good: `reason` says why ("not found", "HTTP 403: Forbidden", ...)."""

    reason: str


def read_or_fault(read: Callable[[], _T], *, passing: tuple[type[Exception], ...] = ()) -> _T | Unreadable:
    """`read()`, or `Unreadable(why)` when it failed permanently (`client_fault`). A transient
    failure, and any exception of the `passing` classes, propagates."""
    try:
        return read()
    except passing:
        raise
    except Exception as e:
        reason = client_fault(e)
        if reason is None:
            raise
        return Unreadable(reason)


class AzurePreflight:
    """`PreflightBackend` on one Azure ML workspace."""

    def __init__(self, workspace: AzureWorkspace) -> None:
        self._ws = workspace

    def preflight(self, config: RunConfig) -> PreflightReport:
        """Read-only checks that a run with `config` can start (backends/base.py PreflightBackend).

        Checks, in order: base_model, training_instance, training_quota, serving_instance,
        serving_quota, endpoint_name, endpoint_owner. Every check runs whatever the others found;
        a permanent failure of a read (not found, other 4xx) is a failed check, anything
        transient propagates (see `client_fault`). Nothing is created.
        """
        base, model = self._base_model(config)
        version = None if model is None or model.version is None else str(model.version)
        model_id = (
            f"azureml://registries/{config.model_registry}/models/{config.base_model_name}/versions/{version}"
            if version
            else None
        )
        allows = {
            "training": allow_list(model, FINETUNE_ALLOW_LIST_TAG),
            "serving": allow_list(model, INFERENCE_ALLOW_LIST_TAG),
        }
        checks = [
            base,
            *self._compute(config, allows),
            endpoint_name_check(config.endpoint_name),
            self._endpoint_owner(config.endpoint_name),
        ]
        report = PreflightReport(checks=checks, model_id=model_id, model_version=version)
        log.info("preflight: %s", "ok" if report.ok else "; ".join(report.reasons))
        return report

    def _base_model(self, config: RunConfig) -> tuple[PreflightCheck, Model | None]:
        registry, name, version = config.model_registry, config.base_model_name, config.base_model_version
        wanted = f"model {name} version {version}" if version else f"model {name} (label latest)"

        def get() -> Model:
            models = self._ws.registry(registry).models
            found: Model = (
                models.get(name=name, version=version) if version else models.get(name=name, label="latest")
            )
            return found

        model = read_or_fault(get)
        if isinstance(model, Unreadable):
            reason = model.reason
            found = "was not found" if reason == "not found" else f"could not be read ({reason})"
            hint = (
                "or unset BASE_MODEL_VERSION to use the latest version"
                if version
                else "or set BASE_MODEL_VERSION to a version listed in the model catalog"
            )
            detail = (
                f"{wanted} {found} in registry {registry}: check BASE_MODEL_NAME (exact, case-sensitive, "
                f"e.g. Phi-3-mini-4k-instruct) and MODEL_REGISTRY (or the run's overrides.model), {hint}"
            )
            return PreflightCheck(name="base_model", ok=False, detail=detail), None
        detail = f"{name} version {model.version} found in registry {registry}"
        return PreflightCheck(name="base_model", ok=True, detail=detail), model

    def _compute(self, config: RunConfig, allows: dict[str, list[str] | None]) -> list[PreflightCheck]:
        """training_instance, training_quota, serving_instance, serving_quota in the workspace region."""
        s = self._ws.settings
        workspace = s.AZUREML_WORKSPACE or ""
        found = read_or_fault(lambda: str(self._ws.ml.workspaces.get(workspace).location or ""))
        if isinstance(found, Unreadable):
            return self._compute_unchecked(found.reason)
        region = found
        self._ws.remember_region(region)
        if not region:
            return self._compute_unchecked("it reports no region")

        sizes = read_or_fault(
            lambda: {
                str(_field(v, "name")).lower(): v
                for v in self._ws.ml.compute.list_sizes(location=region)
                if _field(v, "name")
            }
        )
        usages = read_or_fault(lambda: list(self._ws.ml.compute.list_usage(location=region)))

        checks: list[PreflightCheck] = []
        for role, instance_type, count, setting in (
            ("training", config.training_instance_type, 1, "TRAINING_INSTANCE_TYPE"),
            ("serving", config.serving_instance_type, config.serving_instance_count, "SERVING_INSTANCE_TYPE"),
        ):
            instance, quota = f"{role}_instance", f"{role}_quota"
            if isinstance(sizes, Unreadable):
                detail = f"could not list the VM sizes of {region} ({sizes.reason})"
                checks.append(PreflightCheck(name=instance, ok=False, detail=detail))
                checks.append(PreflightCheck(name=quota, ok=False, detail=f"not checked: {detail}"))
                continue
            size = sizes.get(instance_type.lower())
            checks.append(
                _instance_check(
                    instance,
                    instance_type=instance_type,
                    size=size,
                    region=region,
                    workspace=workspace,
                    setting=setting,
                    allow=allows.get(role),
                )
            )
            if size is None:
                detail = f"not checked: {instance_type} is not available in {region} (see {instance})"
                checks.append(PreflightCheck(name=quota, ok=False, detail=detail))
            elif isinstance(usages, Unreadable):
                detail = f"could not read the Azure ML quota usage of {region} ({usages.reason})"
                checks.append(PreflightCheck(name=quota, ok=False, detail=detail))
            else:
                checks.append(
                    quota_check(
                        quota,
                        instance_type=instance_type,
                        size=size,
                        instances=count,
                        serving=role == "serving",
                        usages=usages,
                        region=region,
                        workspace=workspace,
                    )
                )
        return checks

    def _compute_unchecked(self, reason: str) -> list[PreflightCheck]:
        """The four compute checks, failed because the workspace could not be read (`reason`)."""
        s = self._ws.settings
        detail = (
            f"not checked: workspace {s.AZUREML_WORKSPACE or ''} in resource group {s.AZURE_RESOURCE_GROUP} "
            f"could not be read ({reason}); check AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, "
            "AZUREML_WORKSPACE and the app identity's role on the workspace"
        )
        names = ("training_instance", "training_quota", "serving_instance", "serving_quota")
        return [PreflightCheck(name=n, ok=False, detail=detail) for n in names]

    def _endpoint_owner(self, name: str) -> PreflightCheck:
        if not endpoint_name_check(name).ok:
            detail = "not checked: ENDPOINT_NAME is not a valid endpoint name (see endpoint_name)"
            return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
        workspace = self._ws.settings.AZUREML_WORKSPACE
        try:
            endpoint = read_or_fault(
                lambda: self._ws.ml.online_endpoints.get(name), passing=(ResourceNotFoundError,)
            )
        except ResourceNotFoundError:
            return self._name_free(name)
        if isinstance(endpoint, Unreadable):
            detail = f"could not read endpoint {name} in workspace {workspace} ({endpoint.reason})"
            return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
        owner = (endpoint.tags or {}).get("created-by")
        if owner == APP_TAG:
            detail = (
                f"endpoint {name} exists and was created by this app ({APP_TAG}): a new deployment joins it"
            )
            return PreflightCheck(name="endpoint_owner", ok=True, detail=detail)
        detail = (
            f"endpoint {name} exists and was not created by this app; choose another ENDPOINT_NAME or tag it "
            f"created-by={APP_TAG} if it is yours (its created-by tag: {owner if owner else 'none'})"
        )
        return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)

    def _name_free(self, name: str) -> PreflightCheck:
        """Not in this workspace: is the name taken by another workspace of the region? Online
        endpoint names are unique per region, and an existing endpoint's public host answers HTTP
        (AZUREML_INFERENCE_URL_TEMPLATE); a free name does not resolve (or answers 404)."""
        settings = self._ws.settings
        workspace = settings.AZUREML_WORKSPACE
        region = read_or_fault(self._ws.region)
        if isinstance(region, Unreadable):
            detail = f"not checked: the region of workspace {workspace} could not be read ({region.reason})"
            return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
        url = settings.AZUREML_INFERENCE_URL_TEMPLATE.format(endpoint=name, region=region).rstrip("/") + "/"
        try:
            client = self._ws.http or httpx.Client(timeout=ENDPOINT_PROBE_TIMEOUT_S)
            status = client.get(url, timeout=ENDPOINT_PROBE_TIMEOUT_S).status_code
        except httpx.ConnectError:  # name resolution failed (or nothing listens): no such endpoint
            status = None
        if status is None or status == 404:
            detail = f"endpoint name {name} is free in {region} (in {workspace} too): the run creates it"
            return PreflightCheck(name="endpoint_owner", ok=True, detail=detail)
        detail = (
            f"endpoint name {name} is already taken in {region} by another workspace (endpoint names are "
            f"unique per Azure region; its host answered HTTP {status}): set ENDPOINT_NAME to another name, "
            "or leave it unset for a name derived from this deployment"
        )
        return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
