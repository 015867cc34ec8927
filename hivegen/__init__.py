"""hivegen: run a hive of AI agents in NixOS containers."""

__version__ = "0.1.0"
