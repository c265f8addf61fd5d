"""`LocalPreflight`: the offline `PreflightBackend` (backends/base.py).

The offline stack has no registry, no VM sizes and no quota: the base model is always the tiny
local Phi-3 (`localml/tiny_phi3.py`, randomly initialised, so nothing to download), instance types
are accepted and ignored (training and scoring run as local processes on this machine's CPU), and
no quota applies. What can go wrong offline is the endpoint name: it must follow Azure's rule (the
same rule `LocalServing` enforces, since names become directory names) and, if an endpoint of that
name already exists in this run directory, it is ours: only this app's offline stack creates
endpoints under `<run dir>/serving/`.

Read-only: no process is started and no file is written (`LocalServing.get_endpoint` would start a
front, so it is not called; the endpoint's state file is only looked at).
"""

from __future__ import annotations

from core.models import RunConfig
from core.preflight import PreflightCheck, PreflightReport, endpoint_name_check
from core.settings import Settings
from localml.endpoint_front import ENDPOINT_FILE
from localml.paths import RunPaths
from localml.serving import LocalServing

__all__ = ["LOCAL_MODEL_ID", "LOCAL_MODEL_VERSION", "OFFLINE_CPU", "LocalPreflight"]

LOCAL_MODEL_ID = "local://tiny-phi3"
LOCAL_MODEL_VERSION = "local"
OFFLINE_CPU = "offline: runs on this machine's CPU"


class LocalPreflight:
    """`PreflightBackend` for the offline stack over `LOCAL_RUN_DIR` (or the given `RunPaths`)."""

    def __init__(self, settings: Settings | RunPaths) -> None:
        self.serving = LocalServing(settings)

    def preflight(self, config: RunConfig) -> PreflightReport:
        """The same checks, in the same order, as the Azure backend; only the endpoint name can fail."""
        checks = [
            self._base_model(config),
            _instance("training_instance", config.training_instance_type, 1),
            _no_quota("training_quota"),
            _instance("serving_instance", config.serving_instance_type, config.serving_instance_count),
            _no_quota("serving_quota"),
            endpoint_name_check(config.endpoint_name),
            self._endpoint_owner(config.endpoint_name),
        ]
        return PreflightReport(checks=checks, model_id=LOCAL_MODEL_ID, model_version=LOCAL_MODEL_VERSION)

    def _base_model(self, config: RunConfig) -> PreflightCheck:
        wanted = f"{config.base_model_name} {config.base_model_version or '(latest)'}"
        return PreflightCheck(
            name="base_model",
            ok=True,
            detail=(
                f"offline: the tiny local Phi-3 ({LOCAL_MODEL_ID}, built on the fly) stands in for "
                f"{wanted} from registry {config.model_registry}"
            ),
        )

    def _endpoint_owner(self, name: str) -> PreflightCheck:
        if not endpoint_name_check(name).ok:
            detail = "not checked: ENDPOINT_NAME is not a valid endpoint name (see endpoint_name)"
            return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
        # The state file LocalServing keeps per endpoint (only valid names reach the filesystem).
        state = self.serving._endpoint_dir(name) / ENDPOINT_FILE
        if not state.is_file():
            detail = f"endpoint {name} does not exist in {self.serving.root} yet: the run creates it"
            return PreflightCheck(name="endpoint_owner", ok=True, detail=detail)
        detail = (
            f"endpoint {name} exists in {self.serving.root} and is this app's: offline endpoints are only "
            "created by this app's local stack; a new deployment joins it"
        )
        return PreflightCheck(name="endpoint_owner", ok=True, detail=detail)


def _instance(name: str, instance_type: str, count: int) -> PreflightCheck:
    times = f"{count} × " if count != 1 else ""
    return PreflightCheck(
        name=name, ok=True, detail=f"{OFFLINE_CPU} (instance type {times}{instance_type} is ignored offline)"
    )


def _no_quota(name: str) -> PreflightCheck:
    return PreflightCheck(name=name, ok=True, detail="offline: no Azure quota applies")
