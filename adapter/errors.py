"""Exceptions by whose fault it is. The CLI maps each to one clear line and an exit code."""


class AdapterError(Exception):
    """Base class: anything the CLI reports as `error: <message>`."""

    exit_code = 1


class ConfigError(AdapterError):
    """The user's input (spec, profile, trace, CLI argument) is wrong; nothing was applied."""

    exit_code = 2


class ServerError(AdapterError):
    """A server (Triton, Prometheus, Kubernetes) failed to start, answer or apply a change."""

    exit_code = 3


class WeightsError(AdapterError):
    """Model weights could not be fetched or did not verify."""

    exit_code = 4
