"""Kubernetes API access for cluster mode: load a client, tell transient failures from real
ones, retry the transient ones a bounded number of times."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from adapter.errors import ConfigError, ServerError

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_TIMEOUT_S = 5.0  # every call: a hung API server must not hang a control loop
TRANSIENT_STATUS = frozenset({409, 429, 500, 502, 503, 504})


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In a pod (KUBERNETES_SERVICE_HOST set, no explicit kubeconfig): the ServiceAccount's
    in-cluster config; otherwise the kubeconfig (`--kubeconfig`, $KUBECONFIG, ~/.kube/config)."""
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            configuration = client.Configuration.get_default_copy()
        else:
            configuration = client.Configuration()
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(f"no Kubernetes configuration: {exc}") from None
    # No urllib3-level retries: the loops retry with their own backoff and keep running.
    configuration.retries = 0
    return client.ApiClient(configuration)


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: a conflict, throttling, a server error, or no connection."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS or exc.status == 0
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


def describe(exc: BaseException) -> str:
    """One line: `409 Conflict` (and the server's message), or the connection error."""
    if isinstance(exc, ApiException):
        message = ""
        try:
            import json

            message = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            pass
        return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"connection failed: {text}"


def status_of(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiException) else None


def with_retries(what: str, fn: Callable[[], T], *, attempts: int = 4, first_backoff_s: float = 0.2,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn` until it succeeds; transient failures are retried with exponential backoff up
    to `attempts` times, then (and on any other API error) raise ServerError naming `what`.
    `fn` re-reads what it needs on each attempt, so a 409 (stale resourceVersion) converges."""
    backoff = first_backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            if not is_transient(exc) or attempt == attempts:
                raise ServerError(f"Kubernetes API: {what} failed: {describe(exc)}"
                                  + (f" (after {attempt} attempts)" if attempt > 1 else "")) from None
            log.debug("%s: %s; retrying in %.1f s", what, describe(exc), backoff)
            sleep(backoff)
            backoff *= 2
    raise AssertionError("unreachable")
