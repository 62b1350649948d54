"""Where the tests find the files the repository carries for them."""

from pathlib import Path

# The vectors live inside the repository: a user's clone has nothing beside it.
VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
