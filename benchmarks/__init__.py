"""hivegen's benchmark: `python -m benchmarks` from the repository root.

It builds simulated hives of N = 10, 100 and 1000 registered agents (`--sizes`), then
measures in one run, through hivegen's real code paths:

- `hivegen status --json`: wall time and external processes;
- a no-op `hivegen meta sync`: wall time and external processes (must be 0);
- `spawn` of one more agent: processes, and wall time without the nix build;
- `rebuild` of that agent after a change to its applied repo: how many meta inputs
  hivegen asked nix to bump, and how many lock nodes changed;
- CLI start-up: `hivegen --help`, `hivegen port alice` (medians of `--repeat` runs) and
  the import time of `hivegen.cli`.

It prints a table (measure, N, figure, target, met?, reference design cost), optionally
writes the results as JSON (`--json PATH`), and exits 1 when a target is missed.
How the large hives are built quickly (and what is real about them) is described in
`benchmarks/hives.py`. Nix runs offline: the benchmark sets its own NIX_CONFIG.
"""
