"""The Deployment's replicas, through the scale subresource (autoscaling/v1 Scale), the way the
HPA does it: read the Scale, write only when the desired count differs, and write with the
resourceVersion that was read, so a concurrent change (409) is re-read rather than overwritten.
RBAC needs only `get` and `update` on `deployments/scale` of this one Deployment."""

from __future__ import annotations

import logging

from kubernetes import client

from adapter.cluster.kube import REQUEST_TIMEOUT_S, with_retries
from adapter.errors import ConfigError

log = logging.getLogger(__name__)


class DeploymentScaler:
    def __init__(self, api: client.AppsV1Api, namespace: str, deployment: str, attempts: int = 4):
        self.api, self.namespace, self.deployment = api, namespace, deployment
        self.attempts = attempts

    @property
    def where(self) -> str:
        return f"deployment {self.namespace}/{self.deployment}"

    def replicas(self) -> int:
        scale = with_retries(f"read the scale of {self.where}", lambda: self.api.read_namespaced_deployment_scale(
            self.deployment, self.namespace, _request_timeout=REQUEST_TIMEOUT_S), attempts=self.attempts)
        return scale.spec.replicas or 0

    def scale_to(self, replicas: int) -> str | None:
        """Set spec.replicas; a message saying what changed, or None when it already matched."""
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ConfigError(f"replicas: expected an integer >= 0, got {replicas!r}")

        def attempt() -> str | None:
            scale = self.api.read_namespaced_deployment_scale(
                self.deployment, self.namespace, _request_timeout=REQUEST_TIMEOUT_S)
            current = scale.spec.replicas or 0
            if current == replicas:
                return None
            body = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": self.deployment, "namespace": self.namespace,
                                 "resourceVersion": scale.metadata.resource_version},
                    "spec": {"replicas": replicas}}
            self.api.replace_namespaced_deployment_scale(
                self.deployment, self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S)
            return f"scaled {self.where} from {current} to {replicas} replicas"

        message = with_retries(f"scale {self.where} to {replicas}", attempt, attempts=self.attempts)
        if message:
            log.info(message)
        return message
