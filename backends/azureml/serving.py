"""Serving on Azure ML: managed online endpoints and deployments, traffic, tags and scoring.

Long work (endpoint/deployment create, deployment and endpoint delete) is started and not waited
on: the orchestrator polls with durable timers. Create is create-if-missing, delete is
delete-if-present. The endpoint key is read inside `endpoint_secret` (for `score`, `scorer` and the
Prompt flow connection), registered with core.redact, never logged, returned upward or put in an
exception message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from azure.ai.ml.entities import (
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    OnlineDeployment,
    OnlineEndpoint,
    OnlineRequestSettings,
    ProbeSettings,
)
from azure.core.exceptions import ResourceNotFoundError

from backends.azureml.workspace import AzureWorkspace, provisioning_state, str_tags
from core import redact
from core.models import DeploymentInfo, DeploymentSpec, EndpointInfo, ProvisioningState, ScoreResult
from core.naming import APP_TAG, CREATED_BY_TAG
from core.scoring import Scorer, post_score

log = logging.getLogger(__name__)

SCORE_TIMEOUT_S = 90.0


class AzureServing:
    """`ServingBackend` on one Azure ML workspace."""

    def __init__(self, workspace: AzureWorkspace) -> None:
        self._ws = workspace

    def get_endpoint(self, name: str) -> EndpointInfo:
        try:
            endpoint = self._ws.ml.online_endpoints.get(name)
        except ResourceNotFoundError:
            return EndpointInfo(name=name, state=ProvisioningState.NOT_FOUND)
        return _endpoint_info(endpoint, self._deployments(name))

    def _deployments(self, endpoint: str) -> list[OnlineDeployment]:
        """The endpoint's deployments; [] if the endpoint is gone (the REST list answers 404)."""
        try:
            return list(self._ws.ml.online_deployments.list(endpoint_name=endpoint))
        except ResourceNotFoundError:
            return []

    def list_endpoints(self) -> list[EndpointInfo]:
        """Every online endpoint of the workspace (`online_endpoints.list()`,
        operations/_online_endpoint_operations.py:87-103) with tags, state, traffic and deployments.

        The listing does not fill in zero-traffic deployments as `get` does (:155-162), so the
        deployments of the endpoints this app created are listed (one more call each) and given
        0 % the same way. Other endpoints are never touched: their deployments are those of their
        traffic map, so a foreign endpoint's error or throttling cannot fail the cost guard's sweep.
        """
        infos = []
        for endpoint in self._ws.ml.online_endpoints.list():
            if not endpoint.name:
                continue
            ours = str_tags(endpoint.tags).get(CREATED_BY_TAG) == APP_TAG
            infos.append(_endpoint_info(endpoint, self._deployments(str(endpoint.name)) if ours else []))
        return sorted(infos, key=lambda info: info.name)

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        return sorted(
            (
                DeploymentInfo(
                    name=str(d.name),
                    instance_type=str(d.instance_type or ""),
                    instance_count=int(d.instance_count or 0),
                    state=provisioning_state(d.provisioning_state),
                    tags=str_tags(d.tags),
                )
                for d in self._deployments(endpoint)
            ),
            key=lambda info: info.name,
        )

    def update_endpoint_tags(self, name: str, tags: dict[str, str]) -> None:
        """Merge `tags` into the endpoint's tags and wait for the update (ResourceNotFoundError if
        the endpoint does not exist).

        `begin_create_or_update` PUTs the whole endpoint (operations/_online_endpoint_operations.py
        :204-265, body from `_to_rest_online_endpoint`, entities/_endpoint/online_endpoint.py:151-175),
        and a PUT replaces what it does not carry: a fresh `ManagedOnlineEndpoint(name, tags,
        auth_mode)` would send `traffic: null` and, having no identity, a SystemAssigned identity. So
        the entity `get` returned goes back with only its tags changed; its traffic (zero entries
        filled in by `get`, stripped again by `begin_create_or_update` at :230-234), mirror traffic,
        auth mode, identity, description and public network access are sent exactly as read. (The
        ARM PATCH that carries only tags and identity, `OnlineEndpointsOperations.begin_update` in
        _restclient/arm_ml_service/operations/_operations.py, is not exposed by the public
        `OnlineEndpointOperations`.) Waiting, as `set_traffic` does, means the tags are in place when
        the activity returns, and a rejected update (e.g. 409 while another operation runs on the
        endpoint) raises here for the activity retry policy.
        """
        endpoint = self._ws.ml.online_endpoints.get(name)
        current = str_tags(endpoint.tags)
        merged = {**current, **tags}
        if merged == current:
            return
        endpoint.tags = merged
        self._ws.ml.online_endpoints.begin_create_or_update(endpoint).result()
        log.info("endpoint %s tagged %s", name, sorted(tags))

    def delete_endpoint(self, name: str) -> None:
        """Start deleting the endpoint and its deployments (`online_endpoints.begin_delete`, poller not
        awaited); nothing to do if it is gone or already deleting. The delete's first request is
        sent inside `begin_delete`, so a 404 surfaces there as ResourceNotFoundError."""
        try:
            endpoint = self._ws.ml.online_endpoints.get(name)
        except ResourceNotFoundError:
            return
        if provisioning_state(endpoint.provisioning_state) is ProvisioningState.DELETING:
            log.info("endpoint %s is already being deleted", name)
            return
        try:
            self._ws.ml.online_endpoints.begin_delete(name=name)  # poller not awaited
        except ResourceNotFoundError:
            return
        log.info("endpoint %s deletion started", name)

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        try:
            self._ws.ml.online_endpoints.get(name)
            return
        except ResourceNotFoundError:
            pass
        endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key", tags=dict(tags))
        self._ws.ml.online_endpoints.begin_create_or_update(endpoint)  # poller not awaited
        log.info("endpoint %s creation started", name)

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        try:
            self._ws.ml.online_deployments.get(name=spec.deployment_name, endpoint_name=spec.endpoint_name)
            return
        except ResourceNotFoundError:
            pass
        deployment = ManagedOnlineDeployment(
            name=spec.deployment_name,
            endpoint_name=spec.endpoint_name,
            model=f"azureml:{spec.model.name}:{spec.model.version}",
            instance_type=spec.instance_type,
            instance_count=spec.instance_count,
            request_settings=OnlineRequestSettings(
                request_timeout_ms=self._ws.settings.SERVING_REQUEST_TIMEOUT_MS
            ),
            liveness_probe=self._probe(),
            readiness_probe=self._probe(),
            tags=dict(spec.tags),
        )
        # A new deployment gets no traffic until set_traffic is called.
        self._ws.ml.online_deployments.begin_create_or_update(deployment)  # poller not awaited
        log.info("deployment %s/%s creation started", spec.endpoint_name, spec.deployment_name)

    def _probe(self) -> ProbeSettings:
        """Liveness/readiness probe for the fine-tuned model (SERVING_PROBE_* settings)."""
        s = self._ws.settings
        return ProbeSettings(
            initial_delay=s.SERVING_PROBE_INITIAL_DELAY_S,
            period=s.SERVING_PROBE_PERIOD_S,
            failure_threshold=s.SERVING_PROBE_FAILURE_THRESHOLD,
        )

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState:
        try:
            d = self._ws.ml.online_deployments.get(name=deployment, endpoint_name=endpoint)
        except ResourceNotFoundError:
            return ProvisioningState.NOT_FOUND
        return provisioning_state(d.provisioning_state)

    def endpoint_secret(self, endpoint: str) -> tuple[str, str]:
        """(scoring URI, primary key), read fresh. The key is registered with core.redact."""
        keys = self._ws.ml.online_endpoints.get_keys(endpoint)
        key = getattr(keys, "primary_key", None)
        if not key:
            raise ValueError(f"endpoint {endpoint} has no primary key (is auth_mode 'key'?)")
        redact.remember(key)
        uri = self._ws.ml.online_endpoints.get(endpoint).scoring_uri
        if not uri:
            raise ValueError(f"endpoint {endpoint} has no scoring URI yet")
        return uri, key

    def score(self, endpoint: str, deployment: str | None, payload: dict[str, object]) -> ScoreResult:
        return self.scorer(endpoint, timeout_s=SCORE_TIMEOUT_S)(deployment, payload)

    def scorer(self, endpoint: str, *, timeout_s: float) -> Scorer:
        """Read the scoring URI and key once (three ARM calls), then score many times with them."""
        uri, key = self.endpoint_secret(endpoint)

        def score(deployment: str | None, payload: dict[str, object]) -> ScoreResult:
            label = f"{endpoint}/{deployment}"
            return post_score(
                uri, key, deployment, payload, timeout_s=timeout_s, label=label, http=self._ws.http
            )

        return score

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> None:
        ep = self._ws.ml.online_endpoints.get(endpoint)
        ep.traffic = dict(traffic)
        self._ws.ml.online_endpoints.begin_create_or_update(ep).result()
        log.info("traffic on %s set to %s", endpoint, traffic)

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        try:
            self._ws.ml.online_deployments.begin_delete(name=deployment, endpoint_name=endpoint)
        except ResourceNotFoundError:
            return
        log.info("deployment %s/%s deletion started", endpoint, deployment)


def _endpoint_info(endpoint: OnlineEndpoint, deployments: Sequence[OnlineDeployment]) -> EndpointInfo:
    """EndpointInfo from an endpoint entity and its deployments (nothing secret: no keys, no identity).

    Deployments missing from the traffic map get 0 %, as `OnlineEndpointOperations.get` does
    (operations/_online_endpoint_operations.py:155-162), unless they receive mirrored traffic.
    """
    traffic = {str(k): int(v) for k, v in (endpoint.traffic or {}).items()}
    mirrored = set(endpoint.mirror_traffic or {})
    names = [str(d.name) for d in deployments if d.name]
    for name in names:
        if name not in traffic and name not in mirrored:
            traffic[name] = 0
    return EndpointInfo(
        name=str(endpoint.name),
        state=provisioning_state(endpoint.provisioning_state),
        traffic=traffic,
        deployments=names,
        scoring_uri=endpoint.scoring_uri,
        tags=str_tags(endpoint.tags),
    )
