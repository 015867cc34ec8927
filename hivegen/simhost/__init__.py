"""A simulated NixOS host: `nixos-container`, `systemctl` and `journalctl` as executables.

hivegen drives the real tools as separate processes found on PATH. On a machine without
NixOS and systemd, `install` puts simulations of both in `<root>/bin`; hivegen then runs
its children with that directory first on PATH and `environment(...)` set. The
simulations keep the real command-line contract (see nixos_container.py, systemctl.py
and journalctl.py for what they mirror, and state.py for where they keep their state), and
really build each container's system with nix.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hivegen.errors import HivegenError
from hivegen.fsutil import write_atomic
from hivegen.simhost.state import ENV_CONF_DIR, ENV_ROOT, ENV_SYSTEMD_DIR, Host, remove_tree

__all__ = ["ENV_CONF_DIR", "ENV_ROOT", "ENV_SYSTEMD_DIR", "environment", "install", "reboot"]

# Run under the same interpreter (and so the same venv) as the hivegen that installed it.
_WRAPPER = """\
#!{python}
# hivegen's simulated `{tool}` (hivegen.simhost.{module}), written by hivegen.simhost.install.
import signal

# As the real tools, which are no Python: Ctrl-C on the terminal (SIGINT to the whole
# foreground group) ends it at once, with no traceback.
signal.signal(signal.SIGINT, signal.SIG_DFL)
from hivegen.simhost.{module} import main

raise SystemExit(main())
"""
_TOOLS = (
    ("nixos-container", "nixos_container"),
    ("systemctl", "systemctl"),
    ("journalctl", "journalctl"),
)


def install(root: Path) -> Path:
    """Write the executables into `<root>/bin` and return that directory.

    A repeated install changes nothing (unchanged files are not rewritten).
    """
    python = sys.executable
    if not python or any(ch.isspace() for ch in python):
        # A shebang line cannot carry such a path.
        raise HivegenError(f"cannot install the simulated host for interpreter {python!r}")
    bin_dir = root / "bin"
    for tool, module in _TOOLS:
        text = _WRAPPER.format(python=python, tool=tool, module=module)
        write_atomic(bin_dir / tool, text, mode=0o755)
    return bin_dir


def environment(root: Path, conf_dir: Path, systemd_dir: Path) -> dict[str, str | None]:
    """The variables that point the simulated tools at their state (PATH is the caller's).

    Each simulated command is a fresh Python process: bytecode caching is switched back
    on (in the simulated host's own directory) so that it does not recompile hivegen on
    every call. A value of None removes the variable.
    """
    return {
        ENV_ROOT: str(root),
        ENV_CONF_DIR: str(conf_dir),
        ENV_SYSTEMD_DIR: str(systemd_dir),
        "PYTHONDONTWRITEBYTECODE": None,
        "PYTHONPYCACHEPREFIX": str(root / "pycache"),
    }


def reboot(root: Path, run_dirs: tuple[Path, ...] = ()) -> None:
    """What a reboot does to the simulated host: every unit stops (its record goes,
    as systemd forgets a dead unit) and its /run is emptied, as are `run_dirs` (a
    tmpfs on a real host, such as hivegen's runtime root). What is on disk stays:
    confs, profiles, and the drop-ins in the persistent systemd dir."""
    from hivegen.fsutil import hive_lock

    host = Host.from_env({ENV_ROOT: str(root)})
    with hive_lock(host.lock_path):
        remove_tree(host.units_dir)
        remove_tree(root / "run")
    for directory in run_dirs:
        remove_tree(directory)
