"""Where the tests find the files the repository carries for them."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository's top folder (where the Makefile is)."""

# The vectors live inside the repository: a user's clone has nothing beside it.
VECTORS_DIR = REPO_ROOT / "tests" / "vectors"
