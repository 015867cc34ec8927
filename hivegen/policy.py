"""What a manager's commit may contain before hivegen builds it.

Checked on every commit that enters an applied repo (each proposal, and the proposed
main a first spawn seeds from), in a repo hivegen owns, without reading whole blobs:
- bounded: at most `MAX_FILES` files, `MAX_NIX_FILE` per .nix file, `MAX_FILE` per
  other file, `MAX_TOTAL` in all, `MAX_COMMIT` for the commit object (its message);
- only regular files: a symlink (nix copies it into the store, where it may point at a
  host path) or a submodule (a gitlink nix may fetch) is refused;
- `agent.nix` and `flake.nix` at the top, every .nix file parsed by `nix-instantiate`;
- **flake policy**: `flake.nix` must be the one hivegen renders, and no `flake.lock` may
  come with it. Another flake could add inputs (`path:/`, `git+file:///root/...`) that
  `nix flake lock` copies into the world-readable store every container sees. With the
  operator's explicit `allow_flake_inputs` other inputs are accepted, and shown, but an
  input that points at the host's filesystem never is. hivegen never builds `--impure`,
  so the agent's Nix code cannot read host paths either.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hivegen import nix, process, render
from hivegen.errors import HivegenError, UsageError
from hivegen.git import Git

MAX_FILES = 10_000
MAX_NIX_FILE = 1024 * 1024
MAX_FILE = 8 * 1024 * 1024
MAX_TOTAL = 32 * 1024 * 1024
MAX_COMMIT = 64 * 1024 + 4096  # a 64 KiB message plus the commit's own headers
FLAKE_LOCK = "flake.lock"
INPUTS_TIMEOUT = 20.0

_SYMLINK = "120000"
_GITLINK = "160000"

# Reads `inputs` of a flake.nix without fetching anything: restricted, pure evaluation of
# that one attribute, with a timeout. Only strings leave it.
_INPUTS_NIX = """\
let
  flake = import ./flake.nix;
  text = v: if builtins.isString v then v
    else if builtins.isList v then builtins.concatStringsSep "/" (map text v)
    else if builtins.isBool v || builtins.isInt v then builtins.toJSON v
    else "(not a string)";
  fields = [ "type" "url" "path" "owner" "repo" "host" "ref" "rev" "dir" ];
  describe = v:
    if builtins.isString v then v
    else if !builtins.isAttrs v then "(not an attribute set)"
    else if v ? url then text v.url
    else if v ? follows then "follows " + text v.follows
    else builtins.concatStringsSep " "
      (map (f: f + "=" + text v.${f}) (builtins.filter (f: v ? ${f}) fields));
  inputs = if builtins.isAttrs flake && flake ? inputs && builtins.isAttrs flake.inputs
    then flake.inputs else { };
in
  if NAMES_ONLY then builtins.mapAttrs (name: v: "(unreadable)") inputs
  else builtins.mapAttrs (name: describe) inputs
"""


@dataclass(frozen=True, slots=True)
class FlakeReport:
    """How a commit's flake differs from the one hivegen renders."""

    changed: bool  # flake.nix is not hivegen's
    has_lock: bool
    inputs: tuple[tuple[str, str], ...]  # (name, what it points at), from flake.nix
    error: str = ""  # why the inputs could not be read

    @property
    def clean(self) -> bool:
        return not self.changed and not self.has_lock

    def host_inputs(self) -> list[str]:
        return [name for name, where in self.inputs if points_at_host(where)]

    def describe(self) -> str:
        lines = []
        if self.changed:
            lines.append("flake.nix differs from the per-agent flake hivegen renders")
        if self.has_lock:
            lines.append("the commit carries a flake.lock")
        lines += [f"  input {name}: {where}" for name, where in self.inputs]
        if self.error:
            lines.append(f"  its inputs could not be read: {self.error}")
        return "\n".join(lines)


CLEAN = FlakeReport(False, False, ())


def points_at_host(where: str) -> bool:
    """Does an input (as `read_inputs` describes it) read the host's filesystem?"""
    text = where.strip().lower()
    if text.startswith("follows "):
        return False
    fields = text.split()
    return (
        text.startswith(("/", ".", "~", "path:"))
        or "file:" in text  # file:, git+file:, hg+file:, tarball+file:
        or any(f in ("type=path", "type=file") or f.startswith("path=") for f in fields)
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    mode: str
    kind: str
    size: int
    path: str


def _tree(git: Git, repo: Path, sha: str) -> list[_Entry]:
    listing = git.run(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", "--end-of-options", sha)
    entries = []
    for record in listing.stdout.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, kind, _sha, size = meta.split(maxsplit=3)
        entries.append(_Entry(mode, kind, int(size) if size.strip().isdigit() else 0, path))
        if len(entries) > MAX_FILES:
            break
    return entries


def check_commit(
    git: Git, repo: Path, agent: str, rev: str, *, allow_flake_inputs: bool = False
) -> FlakeReport:
    """Refuse (`UsageError`, exit 2) a commit that breaks the policy above."""
    sha = git.out(repo, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    what = f"commit {sha[:12]} of {agent}"
    size = int(git.out(repo, "cat-file", "-s", sha))
    if size > MAX_COMMIT:
        raise UsageError(f"{what}: its commit message is {size} bytes; at most 64 KiB")
    entries = _tree(git, repo, sha)
    _check_entries(what, entries)
    paths = {e.path for e in entries}
    missing = sorted({render.AGENT_NIX, render.FLAKE_NIX} - paths)
    if missing:
        raise UsageError(
            f"{what} has no {' or '.join(missing)} at its top level: not a hivegen agent config"
        )
    with tempfile.TemporaryDirectory(prefix="hivegen-propose-") as tmp:
        nix_files = _materialise(git, repo, sha, [e.path for e in entries], Path(tmp))
        result = nix.parse_files(nix_files)
        if not result.ok:
            detail = result.stderr.replace(f"{tmp}/", "").strip()
            raise UsageError(f"{what} has a .nix file that does not parse:\n{detail}")
        report = flake_report(agent, Path(tmp), has_lock=FLAKE_LOCK in paths)
    if report.clean:
        return report
    if not allow_flake_inputs:
        raise UsageError(
            f"{what} is refused by the flake policy:\n{report.describe()}",
            hint="new flake inputs are copied into the store every container can read; "
            "if you have checked each one, re-run with --allow-flake-inputs",
        )
    host = report.host_inputs()
    if host or report.error:
        reason = (
            f"input {', '.join(host)} points at the host's filesystem"
            if host
            else "its inputs could not be read"
        )
        raise UsageError(
            f"{what} is refused even with --allow-flake-inputs: {reason}\n{report.describe()}"
        )
    return report


def _check_entries(what: str, entries: list[_Entry]) -> None:
    if len(entries) > MAX_FILES:
        raise UsageError(f"{what} has more than {MAX_FILES} files: not an agent config")
    problems = []
    for entry in entries:
        shown = repr(entry.path)
        if entry.mode == _SYMLINK:
            problems.append(f"{shown} is a symlink (only regular files are accepted)")
        elif entry.mode == _GITLINK:
            problems.append(f"{shown} is a submodule (only regular files are accepted)")
        elif entry.path.endswith(".nix") and entry.size > MAX_NIX_FILE:
            problems.append(f"{shown} is {entry.size} bytes; a .nix file may have 1 MiB")
        elif entry.size > MAX_FILE:
            problems.append(f"{shown} is {entry.size} bytes; a file may have 8 MiB")
    total = sum(e.size for e in entries)
    if total > MAX_TOTAL:
        problems.append(f"its files add up to {total} bytes; at most 32 MiB")
    if problems:
        raise UsageError(f"{what} is refused:\n" + "\n".join(f"  {p}" for p in problems))


def _materialise(git: Git, repo: Path, sha: str, paths: list[str], tmp: Path) -> list[Path]:
    """Write the commit's .nix files and flake.lock under `tmp`; the .nix paths."""
    written = []
    for rel in paths:
        if not (rel.endswith(".nix") or rel == FLAKE_LOCK):
            continue
        target = tmp.joinpath(*PurePosixPath(rel).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = git.run(repo, "cat-file", "blob", f"{sha}:{rel}").stdout
        target.write_text(blob)
        if rel.endswith(".nix"):
            written.append(target)
    return written


def flake_report(agent: str, tree: Path, *, has_lock: bool) -> FlakeReport:
    """Compare `tree/flake.nix` with hivegen's; read its inputs when it differs."""
    rendered = render.render_agent_repo(agent)[render.FLAKE_NIX]
    text = (tree / render.FLAKE_NIX).read_text()
    changed = text != rendered
    if not changed and not has_lock:
        return CLEAN
    inputs, error = read_inputs(tree)
    return FlakeReport(changed, has_lock, inputs, error)


def read_inputs(tree: Path) -> tuple[tuple[tuple[str, str], ...], str]:
    """`inputs` of `tree/flake.nix` as (name, description) pairs, and an error text when
    they could not all be read (then only their names, if even those can be)."""
    described, error = _eval_inputs(tree, names_only=False)
    if not error:
        return described, ""
    names, _ = _eval_inputs(tree, names_only=True)
    return names, error


def _eval_inputs(tree: Path, *, names_only: bool) -> tuple[tuple[tuple[str, str], ...], str]:
    expr = tree / ".hivegen-inputs.nix"
    expr.write_text(_INPUTS_NIX.replace("NAMES_ONLY", "true" if names_only else "false"))
    argv = [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        "--readonly-mode",
        "--option", "restrict-eval", "true",
        "--option", "allow-import-from-derivation", "false",
        "-I", f"hivegen={tree}",
        str(expr),
    ]  # fmt: skip
    try:
        out = process.run(argv, process.RunOpts(check=False, timeout=INPUTS_TIMEOUT))
    except HivegenError as exc:  # a timeout: code that does not terminate
        return (), exc.message
    if not out.ok:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        headline = next((line for line in lines if "error:" in line), lines[0] if lines else "")
        return (), headline.replace(f"{tree}/", "").strip()
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        return (), "nix printed something that is not JSON"
    if not isinstance(data, dict):
        return (), "inputs is not an attribute set"
    return tuple(sorted((str(k), str(v)) for k, v in data.items())), ""


def report_of_commit(git: Git, repo: Path, agent: str, sha: str) -> FlakeReport:
    """`flake_report` of a commit already in `repo` (for review: pending, diff)."""
    rendered = render.render_agent_repo(agent)[render.FLAKE_NIX]
    has_lock = git.ok(repo, "cat-file", "-e", f"{sha}:{FLAKE_LOCK}")
    text = git.run(repo, "cat-file", "blob", f"{sha}:{render.FLAKE_NIX}", check=False).stdout
    if text == rendered and not has_lock:
        return CLEAN
    with tempfile.TemporaryDirectory(prefix="hivegen-flake-") as tmp:
        Path(tmp, render.FLAKE_NIX).write_text(text)
        return flake_report(agent, Path(tmp), has_lock=has_lock)
