"""vaekit's version: the one source pyproject.toml and `vaekit --version` read."""

VERSION = "0.1.0"
