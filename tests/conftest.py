"""Shared fixtures. `triton` is one real local Triton for the whole session, serving every
variant and the ensembles (started by the product's own launcher)."""

from __future__ import annotations

import pytest

from adapter import paths
from adapter.serving.launcher import LocalTriton


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    server = LocalTriton(log_path=tmp_path_factory.mktemp("triton") / "triton.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def weights_present():
    missing = [p for p in paths.MODEL_REPOSITORY.glob("embed_*/1") if not (p / "weights").exists()]
    assert not missing, f"weights missing for {missing}: run `make models` (make test does)"
