"""The Nix-facing tests (`-m nix`) again, on Debian trixie's Nix 2.26 (tests/nixroot).

Every test marked `nix` runs on the host's Nix 2.8 with the rest of the suite, and
here a second time on 2.26, in a trixie root: a Nix call is right when it does the job
on both. Skipped where the machine cannot build the root; failed in CI."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.hostbox.conftest import require
from tests.nixroot import harness

pytestmark = pytest.mark.nixroot

# The inner run's own budget; the whole suite's is 15 minutes.
TIMEOUT = 900.0


@pytest.fixture(scope="module")
def trixie_root() -> Path:
    if os.environ.get(harness.INSIDE_ENV):
        pytest.skip("already inside the trixie root")
    require("the trixie root", harness.missing_prerequisites())
    return harness.rootfs()


def test_the_nix_facing_tests_pass_on_nix_2_26(trixie_root: Path) -> None:
    version = harness.nix_version(trixie_root)
    assert re.fullmatch(r"nix \(Nix\) 2\.26\.\d+", version), version
    # Two workers, as the host's run: the Nix tests are most of this run's time.
    result = harness.run_pytest(
        trixie_root,
        ["-m", "nix", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-rfE"],
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    # pytest's last `===` line: "=== 96 passed, 883 deselected in 45.19s ===".
    ends = [line for line in output.splitlines() if line.startswith("=") and " in " in line]
    summary = ends[-1].strip("= ") if ends else "(no summary)"
    # The inner session says which nix it ran against (tests/conftest.py's header).
    assert "nix: nix (Nix) 2.26" in output, output[-4000:]
    assert result.returncode == 0, f"on Nix 2.26: {summary}\n{_failures(output)}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed, summary
    assert int(passed.group(1)) > 0, summary
    print(f"on {version}: {summary}")


def _failures(output: str) -> str:
    """What failed in the inner run, readable in the outer report: pytest's FAILED and
    ERROR lines first, then the start and the end of each failure's section (a failing
    assertion on a whole tree can print megabytes)."""
    lines = output.splitlines()
    named = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    sections: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.startswith("____") and line.endswith("____"):
            if current:
                sections.append(_shortened(current))
            current = [line]
        elif current and line.startswith(("====", "----")):
            sections.append(_shortened(current))
            current = []
        elif current:
            current.append(line)
    if current:
        sections.append(_shortened(current))
    return "\n".join([*named, "", *sections]) or output[-6000:]


def _shortened(section: list[str], head: int = 40, tail: int = 40) -> str:
    if len(section) <= head + tail:
        return "\n".join(section)
    cut = f"[... {len(section) - head - tail} lines ...]"
    return "\n".join([*section[:head], cut, *section[-tail:]])
