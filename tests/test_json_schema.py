"""`--json`: every verb's documents, successes and failures, against hivegen/schemas.

(conftest validates every document any test makes in-process; here each kind is made
on purpose, the schemas are checked against hivegen's own enums, and the envelope's
promises are tested: versions, times, one document a failure.)
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from hivegen import batch, jsondoc
from hivegen.cli import build_parser, main
from hivegen.config import load_config
from hivegen.desired import Desired
from hivegen.findings import Check, Severity
from hivegen.hive import Hive
from hivegen.names import Role
from hivegen.reconcile import Outcome
from hivegen.rollout import Phase
from hivegen.spawnrequests import RequestState, SpawnRequests
from hivegen.status import AgentState
from hivegen.store import ProposalKind, ProposalStatus
from tests import jsonschemas
from tests.conftest import commit_dir, sim_config

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "hivegen/schemas"
ISO_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def documents(out: str) -> list[dict[str, Any]]:
    """The documents on stdout: one indented object, or JSON Lines (logs)."""
    text = out.strip()
    if not text:
        return []
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]


class Tour:
    """Runs verbs with --json in-process; keeps each document's kind."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys
        self.seen: dict[jsondoc.Kind, list[str]] = {}

    def run(self, *args: str, code: int = 0) -> dict[str, Any]:
        try:
            got = main(["--config", str(self.config), *args, "--json"])
        except SystemExit as exc:  # argparse's usage errors
            got = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert got == code, f"hivegen {' '.join(args)} exited {got}:\n{err}"
        docs = documents(out)
        assert docs, f"hivegen {' '.join(args)} --json printed no document"
        for doc in docs:
            kind = jsonschemas.validate(doc)
            self.seen.setdefault(kind, []).append(" ".join(args))
        if code != 0:
            assert err, "a failure says so on stderr too"
        return docs[-1]


@pytest.fixture
def tour(tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]) -> Tour:
    return Tour(sim_config(tmp_path, hyperhive_flake), capsys)


def test_every_kind_is_printed_by_some_verb_and_matches_its_schema(
    tour: Tour, tmp_path: Path
) -> None:
    run = tour.run
    assert run("init")["schema"] == "hivegen.init/1"
    assert run("port", "alice")["port"] == 8879
    assert set(run("render", "agent-nix", "alice")["files"]) == {"agent.nix"}
    spawned = run("spawn", "alice")
    assert (spawned["verb"], spawned["ok"], spawned["agents"][0]["agent"]) == (
        "spawn",
        True,
        "alice",
    )
    assert [a["name"] for a in run("list")["agents"]] == ["alice"]
    status = run("status")
    assert ISO_SECOND.match(status["time"])
    assert [a["state"] for a in status["agents"]] == ["running"]
    assert run("start", "alice", "alice-typo", code=2)["error"]["exit_code"] == 2

    proposed = tmp_path / "state/agents/alice/config"
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = "1"; }\n')
    sha = commit_dir(proposed, "one")
    pending = run("pending")
    assert pending["proposals"] == []
    assert pending["unproposed"][0]["commits"][0]["sha"] == sha
    assert ISO_SECOND.match(pending["unproposed"][0]["commits"][0]["committed"])
    proposal = run("propose", "alice")
    assert (proposal["sha"], proposal["subject"]) == (sha, "one")
    assert (proposal["resolved"], proposal["error"]) == (None, None)  # not yet: null
    assert _near_now(proposal["created"])
    assert run("approve", "1", "--dry-run")["ok"] is True
    deployed = run("approve", "1")
    assert (deployed["status"], _near_now(deployed["resolved"])) == ("deployed", True)

    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = throw "no"; }\n')
    commit_dir(proposed, "two")
    run("propose", "alice")
    assert run("approve", "2", "--dry-run", code=1)["ok"] is False
    failed = run("approve", "2", code=1)
    assert failed["status"] == "failed"
    assert "no" in failed["error"]

    (proposed / "agent.nix").write_text("{ ... }: { }\n")
    commit_dir(proposed, "three")
    run("propose", "alice")
    assert run("deny", "3")["status"] == "denied"
    entries = run("history", "alice")["entries"]
    assert {e["tag"] for e in entries} >= {"deployed/1", "failed/2", "denied/3"}
    assert all(ISO_SECOND.match(e["when"]) for e in entries if e["when"] is not None)
    back = run("rollback", "alice", "--to", "deployed/0", "--yes")
    assert (back["kind"], back["status"]) == ("rollback", "deployed")

    SpawnRequests(load_config(tour.config)).add("carol")
    requests = run("pending", "--spawn-requests")
    assert set(requests) == {"schema", "spawn_requests"}
    answered = run("dismiss", "carol", "--note", "not now")
    assert (answered["state"], _near_now(answered["resolved"])) == ("dismissed", True)

    assert "changes" in run("meta", "sync", "--check")
    assert run("meta", "sync")["changed"] is False
    assert [i["name"] for i in run("meta", "update", "hyperhive")["inputs"]] == ["hyperhive"]
    assert run("rollout", "--all")["ok"] is True
    assert run("reconcile")["agents"][0]["name"] == "alice"
    assert isinstance(run("doctor")["findings"], list)
    assert run("logs", "alice", "-n", "2")["agent"] == "alice"
    # A failure with no document of its own: hivegen.error/1, with the exit code.
    unknown = run("history", "alise", code=2)["error"]
    assert unknown["hint"] == "did you mean 'alice'? (hivegen list shows the hive)"

    assert set(tour.seen) == set(jsondoc.Kind), (
        f"never printed: {set(jsondoc.Kind) - set(tour.seen)}"
    )


def _near_now(stamp: str | None) -> bool:
    assert stamp is not None
    assert ISO_SECOND.match(stamp), stamp
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return abs(moment.timestamp() - time.time()) < 600


def test_one_agent_failing_is_a_lifecycle_document_too(tour: Tour) -> None:
    """As a batch's (test_batch): the same shape for one name as for several."""
    tour.run("spawn", "alice")
    tour.run("stop", "alice")
    Hive(load_config(tour.config)).host.destroy("h-alice")  # gone behind hivegen's back
    doc = tour.run("start", "alice", code=1)
    assert (doc["verb"], doc["ok"]) == ("start", False)
    [alice] = doc["agents"]
    assert (alice["agent"], alice["ok"], alice["steps"]) == ("alice", False, [])
    assert alice["error"]["exit_code"] == 1
    assert alice["error"]["message"]


def test_a_usage_error_is_an_error_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", "--json", "--bogus"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    [doc] = documents(out)
    assert jsonschemas.validate(doc) is jsondoc.Kind.ERROR
    assert doc["error"]["exit_code"] == 2
    assert "--bogus" in doc["error"]["message"]
    assert "unrecognized arguments: --bogus" in err
    # Without --json, stdout stays empty.
    with pytest.raises(SystemExit):
        main(["status", "--bogus"])
    assert capsys.readouterr().out == ""


def test_ctrl_c_is_an_error_document_with_exit_130(
    tour: Tour, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Hive) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Hive, "status", interrupted)
    doc = tour.run("status", code=130)
    assert doc["error"] == {"message": "interrupted", "hint": None, "exit_code": 130}


def test_a_failed_command_is_named_in_the_error_document(tour: Tour, tmp_path: Path) -> None:
    tour.run("spawn", "alice")
    # A corrupt applied repo: git fails, and the document carries its argv and stderr.
    (tmp_path / "state/applied/alice/.git/HEAD").write_text("garbage\n")
    doc = tour.run("history", "alice", code=1)
    command = doc["error"].get("command")
    assert command is not None, doc
    assert command["argv"][0] == "git"
    assert command["exit_code"] != 0
    assert command["stderr_tail"]


# -- the schemas themselves -----------------------------------------------------------------


def test_one_schema_file_a_kind_each_naming_its_kind() -> None:
    import jsonschema

    assert {p.stem for p in SCHEMAS.glob("*.json")} == {str(k) for k in jsondoc.Kind}
    for kind in jsondoc.Kind:
        schema = jsondoc.schema(kind)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["schema"] == {
            "const": jsondoc.schema_id(kind),
            "description": "this document's kind and version",
        }
        assert "schema" in schema["required"]


def _at(schema: dict[str, Any], path: str) -> list[object]:
    node: Any = schema
    for key in path.split("/"):
        node = node["items"] if key == "[]" else node["properties"][key]
    return [v for v in node["enum"] if v is not None]


ENUMS: list[tuple[jsondoc.Kind, str, type[StrEnum]]] = [
    (jsondoc.Kind.STATUS, "agents/[]/state", AgentState),
    (jsondoc.Kind.STATUS, "agents/[]/role", Role),
    (jsondoc.Kind.STATUS, "agents/[]/desired", Desired),
    (jsondoc.Kind.LIST, "agents/[]/role", Role),
    (jsondoc.Kind.PORT, "role", Role),
    (jsondoc.Kind.PROPOSAL, "status", ProposalStatus),
    (jsondoc.Kind.PROPOSAL, "kind", ProposalKind),
    (jsondoc.Kind.DEPLOYMENT, "status", ProposalStatus),
    (jsondoc.Kind.DEPLOYMENT, "kind", ProposalKind),
    (jsondoc.Kind.PENDING, "proposals/[]/status", ProposalStatus),
    (jsondoc.Kind.PENDING, "spawn_requests/[]/state", RequestState),
    (jsondoc.Kind.SPAWN_REQUEST, "state", RequestState),
    (jsondoc.Kind.LIFECYCLE, "verb", batch.Verb),
    (jsondoc.Kind.ROLLOUT, "agents/[]/phase", Phase),
    (jsondoc.Kind.DOCTOR, "findings/[]/check", Check),
    (jsondoc.Kind.DOCTOR, "findings/[]/severity", Severity),
    (jsondoc.Kind.RECONCILE, "agents/[]/outcome", Outcome),
]


@pytest.mark.parametrize(
    ("kind", "path", "enum"), ENUMS, ids=lambda v: str(getattr(v, "__name__", v))
)
def test_a_schema_lists_exactly_the_values_hivegen_has(
    kind: jsondoc.Kind, path: str, enum: type[StrEnum]
) -> None:
    assert _at(jsondoc.schema(kind), path) == [str(v) for v in enum]


def test_the_shared_parts_are_the_same_in_every_schema() -> None:
    """A proposal is the same in proposal, deployment and pending; so is a time."""
    proposal = jsondoc.schema(jsondoc.Kind.PROPOSAL)["properties"]
    deployment = jsondoc.schema(jsondoc.Kind.DEPLOYMENT)["properties"]
    pending = jsondoc.schema(jsondoc.Kind.PENDING)["properties"]["proposals"]["items"]
    shared = set(proposal) - {"schema", "subject"}
    for field in shared:
        assert deployment[field] == proposal[field], field
        assert pending["properties"][field] == proposal[field], field
    times = [
        proposal["created"],
        pending["properties"]["created"],
        jsondoc.schema(jsondoc.Kind.STATUS)["properties"]["time"] | {"description": "x"},
    ]
    assert times[0] == times[1]
    assert times[2]["pattern"] == times[0]["pattern"]


def test_shipped_schemas_are_open_and_the_tests_closed() -> None:
    """A consumer of version 1 accepts a field added later; the tests do not accept a
    field nobody documented."""
    import jsonschema

    doc = {"schema": "hivegen.port/1", "name": "a", "port": 1, "container": "h-a", "role": "agent"}
    added = {**doc, "added_later": True}
    jsonschema.validate(added, jsondoc.schema(jsondoc.Kind.PORT))
    jsonschemas.validate(doc)
    with pytest.raises(AssertionError, match="added_later"):
        jsonschemas.validate(added)
    with pytest.raises(AssertionError, match=re.escape("no schema is named 'hivegen.port/2'")):
        jsonschemas.validate({**doc, "schema": "hivegen.port/2"})


def _json_verbs() -> Iterator[str]:
    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*prefix, name])
        if prefix and any("--json" in a.option_strings for a in parser._actions):
            yield " ".join(prefix)

    yield from walk(build_parser(), [])


def test_every_verb_with_json_is_in_the_documented_table() -> None:
    table = (ROOT / "docs/json.md").read_text()
    rows = [line.replace("\\|", "/") for line in table.splitlines() if line.startswith("| `")]
    printed_by = " ".join(row.split("|")[2] for row in rows)
    verbs = sorted(_json_verbs())
    assert len(verbs) >= 20
    for verb in verbs:
        # `render agent-nix/agent-flake/meta`: a group's verbs in one cell.
        group, _, leaf = verb.rpartition(" ")
        assert f"`{verb}" in printed_by or (
            group and f"{group} " in printed_by and leaf in printed_by
        ), verb
    for kind in jsondoc.Kind:
        assert f"| `{kind}` |" in table, kind


def test_time_format() -> None:
    assert jsondoc.time(1700000000.75) == "2023-11-14T22:13:20Z"
    assert jsondoc.time(None) is None
    assert jsondoc.precise_time(1700000000000001) == "2023-11-14T22:13:20.000001Z"


def test_status_watch_json_prints_a_document_a_tick_and_nothing_else(tour: Tour) -> None:
    import signal
    import subprocess
    import sys

    tour.run("spawn", "alice")
    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hivegen",
            f"--config={tour.config}",
            "status",
            "--json",
            "--watch=0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    decoder = json.JSONDecoder()
    text = ""
    docs: list[Any] = []
    for line in watch.stdout:  # until two whole documents have come
        text += line
        if line == "}\n":
            docs.append(decoder.decode(text))
            text = ""
            if len(docs) == 2:
                break
    watch.send_signal(signal.SIGINT)
    rest, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    for doc in [*docs, *documents_of_stream(rest)]:
        assert jsonschemas.validate(doc) is jsondoc.Kind.STATUS
        assert [a["name"] for a in doc["agents"]] == ["alice"]
    assert len(docs) == 2


def documents_of_stream(text: str) -> list[Any]:
    """Concatenated documents (a watch interrupted mid-way may have printed part of one:
    only whole ones are returned)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return found
        try:
            doc, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return found
        found.append(doc)


def test_a_document_prints_its_schema_first_and_every_other_key_sorted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["port", "alice", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split('"')[1] for line in lines[1:-1]]
    assert keys == ["schema", "container", "name", "port", "role"]
    nested = {"schema": "x", "b": {"z": 1, "a": [{"y": 0, "c": 0}]}, "a": None}
    assert jsondoc.dumps(nested, indent=None) == (
        '{"schema": "x", "a": null, "b": {"a": [{"c": 0, "y": 0}], "z": 1}}'
    )
