"""Where the project's folders are. Everything is relative to the checkout."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"
ENSEMBLES = ROOT / "ensembles"
DATA = Path(__file__).resolve().parent / "data"
CACHE = ROOT / ".cache"
RUNS = ROOT / "runs"
