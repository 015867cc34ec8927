"""Hostile input corpus (tests/hostile/corpus.json): every case exits 2 with a message
naming the problem and writes nothing, or, where the value is legal, succeeds, and what
it renders parses and evaluates back to the same value in real Nix."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hivegen import process
from hivegen.cli import main
from hivegen.config import Config, load_config
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.render import MetaModel, render_agent_repo, render_meta
from tests.conftest import commit_dir, git, sim_config

CORPUS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "hostile" / "corpus.json").read_text()
)


def case_id(index: int, case: dict[str, Any]) -> str:
    return f"{index}-{case['kind']}-{case.get('key', '')}-{'legal' if case['legal'] else 'bad'}"


def toml_value(value: object) -> str:
    """A TOML literal for any JSON value (strings fully escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        out = []
        for char in value:
            if char in '"\\':
                out.append("\\" + char)
            elif ord(char) < 0x20 or ord(char) == 0x7F:
                out.append(f"\\u{ord(char):04x}")
            else:
                out.append(char)
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def world(tmp_path: Path) -> Path:
    (tmp_path / "hive.toml").write_text(f'[hive]\nstate_root = "{tmp_path / "state"}"\n')
    return tmp_path


def write_case_config(world: Path, case: dict[str, Any]) -> Path:
    tables: dict[str, dict[str, object]] = {"hive": {"state_root": str(world / "state")}}
    tables.setdefault(case["table"], {})[case["key"]] = case["value"]
    text = "".join(
        f"[{table}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
        for table, keys in tables.items()
    )
    path = world / "case.toml"
    path.write_text(text)
    return path


# Values given to hivegen directly; what a manager's commit brings is tested further down.
DIRECT_KINDS = ("agent-name", "config", "revision", "note", "id")


def is_direct(case: dict[str, Any]) -> bool:
    return case["kind"] in DIRECT_KINDS and (case["kind"] != "note" or not case["legal"])


@pytest.mark.parametrize(
    "case",
    [c for c in CORPUS if is_direct(c)],
    ids=[case_id(i, c) for i, c in enumerate(CORPUS) if is_direct(c)],
)
def test_hostile_input(  # noqa: PLR0912 -- one branch per kind of input keeps cases together
    case: dict[str, Any], world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = world / "hive.toml"
    kind, value, legal = case["kind"], case["value"], case["legal"]
    before_processes = process.started_count()
    match kind:
        case "agent-name":
            calls = [["port", "--", value], ["render", "agent-nix", "--", value]]
            if not legal:
                calls += [
                    ["spawn", "--", value],
                    ["destroy", "--purge", "--", value],
                    ["history", "--", value],
                ]
            for call in calls:
                before = tree(world)
                code, out, err = run(["--config", str(config), *call], capsys)
                if legal:
                    assert code == 0, err
                else:
                    assert code == 2, (call, err)
                    assert "invalid agent name" in err
                    assert "lowercase letter" in err  # says what is allowed
                    assert out == ""
                    assert tree(world) == before
        case "config":
            path = write_case_config(world, case)
            before = tree(world)
            code, out, err = run(
                ["--config", str(path), "render", "meta", "--agent", "alice"], capsys
            )
            if legal:
                assert code == 0, err
                nix_file = world / "meta.nix"
                nix_file.write_text(out)
                parsed = subprocess.run(
                    ["nix-instantiate", "--parse", str(nix_file)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert parsed.returncode == 0, parsed.stderr
            else:
                assert code == 2, err
                table = case["table"]
                assert f"{path}: [{table}] {case['key']}:" in err, err
                assert tree(world) == before
        case "revision":
            before = tree(world)
            code, _, err = run(["--config", str(config), "propose", "alice", "--", value], capsys)
            assert code == 2, err
            assert "7 to 40 lowercase hex" in err
            assert tree(world) == before
            assert process.started_count() == before_processes  # not one git call
        case "note":
            before = tree(world)
            code, _, err = run(["--config", str(config), "deny", "1", "--note", value], capsys)
            assert code == 2, err
            assert "note" in err
            assert tree(world) == before
        case "id":
            for verb in ("approve", "deny", "diff"):
                before = tree(world)
                code, _, err = run(["--config", str(config), verb, "--", value], capsys)
                assert code == 2, (verb, err)
                assert "invalid int value" in err or "no proposal" in err
                assert tree(world) == before
        case _:
            raise AssertionError(kind)


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 200
    kinds = {c["kind"] for c in CORPUS}
    assert kinds == {
        "agent-name",
        "config",
        "revision",
        "note",
        "id",
        "flake-input",
        "flake-input-attrs",
        "commit-subject",
    }


def test_legal_hostile_strings_evaluate_back(tmp_path: Path) -> None:
    """All legal hostile config strings, rendered into meta flakes and read back by one
    real `nix eval` through the flake's own outputs function."""
    cases = [
        c
        for c in CORPUS
        if c["kind"] == "config"
        and c["legal"]
        and c["key"] in ("operator_pronouns", "committer_name")
    ]
    assert len(cases) >= 40
    files = []
    for index, case in enumerate(cases):
        config = Config()
        hive = config.hive.__class__(
            **{
                **{f: getattr(config.hive, f) for f in config.hive.__dataclass_fields__},
                case["key"]: case["value"],
            }
        )
        config = Config(hive=hive)
        path = tmp_path / f"{index}.nix"
        path.write_text(render_meta(MetaModel.from_config(config, ["alice", "hm1nd"]))["flake.nix"])
        files.append(path)
    parsed = subprocess.run(
        ["nix-instantiate", "--parse", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert parsed.returncode == 0, parsed.stderr
    stub = (
        "{ nixosConfigurations.agent-base.extendModules = a: a; "
        "nixosConfigurations.manager.extendModules = a: a; }"
    )
    expr = (
        "let read = path: let f = import path; o = f.outputs { self = { }; hyperhive = "
        f"{stub}; agent-alice.nixosModules.default = {{ }}; "
        "agent-hm1nd.nixosModules.default = { }; }; "
        "v = (builtins.elemAt o.nixosConfigurations.alice.modules 1).environment.variables; "
        "in { operator_pronouns = v.HIVE_OPERATOR_PRONOUNS; committer_name = "
        "v.GIT_COMMITTER_NAME; }; in map read [ " + " ".join(map(str, files)) + " ]"
    )
    out = subprocess.run(
        ["nix", "eval", "--json", "--impure", "--expr", expr],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout)
    for case, value in zip(cases, values, strict=True):
        assert value[case["key"]] == case["value"]


def test_legal_hostile_notes_are_kept_verbatim(tmp_path: Path, hyperhive_flake: str) -> None:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("alice")
    proposals = Proposals(hive)
    proposed = hive.layout.proposed("alice")
    notes = [c["value"] for c in CORPUS if c["kind"] == "note" and c["legal"]]
    notes.append("# a line git would strip\n\n  indented\n")
    for index, note in enumerate(notes, start=1):
        (proposed / "agent.nix").write_text(f"{{ ... }}: {{ }} # {index}\n")
        proposals.propose("alice", commit_dir(proposed, f"change {index}"))
        assert proposals.deny(index, note).note == note
        tag = git(hive.layout.applied("alice"), "cat-file", "tag", f"denied/{index}")
        body = tag.split("\n\n", 1)[1] if "\n\n" in tag else ""
        assert body.strip() == note.strip()  # verbatim: no line stripped or rewrapped


# -- what a manager's commit brings (Security II) ------------------------------------------

FLAKE_KINDS = ("flake-input", "flake-input-attrs")


@pytest.fixture(scope="module")
def proposing(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> Hive:
    top = tmp_path_factory.mktemp("hostile-propose")
    hive = Hive(load_config(sim_config(top, hyperhive_flake)))
    hive.spawn("alice")
    return hive


def flake_with_input(case: dict[str, Any]) -> str:
    value = case["value"]
    expr = json.dumps(value) if case["kind"] == "flake-input" else value
    return (
        "{\n"
        f"  inputs.extra = {expr};\n"
        "  outputs = inputs: { nixosModules.default = import ./agent.nix; };\n"
        "}\n"
    )


@pytest.mark.parametrize(
    "case",
    [c for c in CORPUS if c["kind"] in FLAKE_KINDS],
    ids=[case_id(i, c) for i, c in enumerate(CORPUS) if c["kind"] in FLAKE_KINDS],
)
def test_hostile_flake_input(
    case: dict[str, Any], proposing: Hive, capsys: pytest.CaptureFixture[str]
) -> None:
    hive = proposing
    assert hive.config.source is not None
    argv = ["--config", str(hive.config.source), "propose", "alice"]
    proposed = hive.layout.proposed("alice")
    (proposed / "flake.nix").write_text(flake_with_input(case))
    sha = commit_dir(proposed, f"input {case['kind']}")
    applied = hive.layout.applied("alice")
    tags_before = git(applied, "tag", "--list")
    # Without the operator's flag every new input is refused, and named.
    code, _, err = run([*argv, sha], capsys)
    assert code == 2, err
    assert "refused by the flake policy" in err
    assert "input extra: " in err
    assert git(applied, "tag", "--list") == tags_before
    code, out, err = run([*argv, sha, "--allow-flake-inputs"], capsys)
    if case["legal"]:
        assert code == 0, err
        Proposals(hive).deny(int(out.strip()))
    else:
        assert code == 2, err
        assert "refused even with --allow-flake-inputs" in err
        assert git(applied, "tag", "--list") == tags_before


@pytest.mark.parametrize(
    "case",
    [c for c in CORPUS if c["kind"] == "commit-subject"],
    ids=[case_id(i, c) for i, c in enumerate(CORPUS) if c["kind"] == "commit-subject"],
)
def test_hostile_commit_subject(
    case: dict[str, Any], proposing: Hive, capsys: pytest.CaptureFixture[str]
) -> None:
    hive = proposing
    assert hive.config.source is not None
    base = ["--config", str(hive.config.source)]
    proposed = hive.layout.proposed("alice")
    (proposed / "flake.nix").write_text(render_agent_repo("alice")["flake.nix"])
    (proposed / "agent.nix").write_text(f"{{ ... }}: {{ }}  # {len(case['value'])}\n")
    sha = commit_dir(proposed, case["value"])
    code, out, err = run([*base, "propose", "alice", sha], capsys)
    assert code == 0, err
    proposal_id = int(out.strip())
    for args in (
        ["pending"],
        ["history", "alice"],
        ["diff", str(proposal_id), "--color", "always"],
    ):
        code, out, err = run([*base, *args], capsys)
        assert code == 0, err
        shown = out + err
        for char in shown:
            # hivegen's own colour escapes (ESC [ ... m) are allowed in diff --color.
            if char == "\x1b" and args[0] == "diff":
                continue
            assert not (ord(char) < 0x20 and char not in "\n\t"), (args, repr(char))
            assert not (0x7F <= ord(char) <= 0x9F), (args, repr(char))
            assert char not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069", args
    code, out, _ = run([*base, "pending", "--json"], capsys)
    subjects = {e["id"]: e["subject"] for e in json.loads(out)["proposals"]}
    assert subjects[proposal_id] == case["value"]  # exact, a lone "\r" included
    Proposals(hive).deny(proposal_id)
