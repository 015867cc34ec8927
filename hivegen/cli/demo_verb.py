"""demo: a throwaway hive on the simulated host, each step shown as the command it
runs, with `hivegen serve` in this process for the manager's socket."""

from __future__ import annotations

import argparse
import contextlib
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hivegen.cli.common import _load_config
from hivegen.cli.serve_verbs import _serve_hive_factory
from hivegen.errors import ExitCode, HivegenError
from hivegen.sanitize import terminal


def _cmd_demo(args: argparse.Namespace) -> int:
    import os
    import shlex

    # Each step goes through main, as `hivegen STEP` would. hivegen.cli imports this
    # module (through parser), so main is imported here, once the package is loaded.
    from hivegen.cli import main
    from hivegen.demo import (
        DEMO_AGENTS,
        DEMO_BROKEN_CHANGE,
        DEMO_GOOD_CHANGE,
        latest_proposal,
        manager_commit,
        prepare,
        release_base,
    )

    print(f"# building a throwaway demo hive in {Path(args.directory).absolute()}", flush=True)
    demo = prepare(Path(args.directory))
    # Later settings win: the demo's offline settings go after the operator's own.
    nix_config = "\n".join(x for x in (os.environ.get("NIX_CONFIG"), demo.nix_config) if x)
    os.environ["NIX_CONFIG"] = nix_config
    config = _load_config(argparse.Namespace(config=demo.config_path))
    print(
        "# Nix runs offline here; to repeat these commands by hand, first:\n"
        f"export NIX_CONFIG={shlex.quote(nix_config)}"
    )
    flags = ["--config", str(demo.config_path), *(["-v"] if args.verbose else [])]
    steps = [
        ["init"],
        ["spawn", config.hive.manager],
        *(["spawn", name] for name in DEMO_AGENTS),
        ["status"],
    ]

    def hivegen(*step: str, expect: ExitCode = ExitCode.OK) -> None:
        print(f"\n$ hivegen {shlex.join([*flags, *step])}", flush=True)
        code = main([*flags, *step])
        if code != expect:
            raise HivegenError(f"demo step `hivegen {shlex.join(step)}` exited {code}")

    story = _Story(lambda *step: main([*flags, *step]))
    for step in steps:
        hivegen(*step)
    story.spawned((config.hive.manager, *DEMO_AGENTS))

    # The manager proposes a change to alice through its socket (hivegen serve runs);
    # the operator reviews and approves it. A second one, proposed with the CLI, fails.
    agent = DEMO_AGENTS[0]
    proposed = config.layout.proposed(agent)
    with _demo_server(config, flags) as ask:
        for agent_nix, message, outcome in (
            (DEMO_GOOD_CHANGE, f"{agent} greets the operator", ExitCode.OK),
            (DEMO_BROKEN_CHANGE, f"{agent}: a change that does not build", ExitCode.FAILED),
        ):
            print(f"\n# the manager ({config.hive.manager}) edits {agent}'s config and commits:")
            print(f"$ cat > {proposed / 'agent.nix'} <<'EOF'\n{agent_nix}EOF")
            print(f"$ git -C {proposed} commit -am {shlex.quote(message)}")
            sha = manager_commit(config, agent, agent_nix, message)
            if outcome is ExitCode.OK:
                print("\n# ...and asks the operator to deploy it, through its socket:")
                made = ask("POST", "/propose", {"agent": agent})
                proposal_id = str(made["id"])
                hivegen("pending")
                hivegen("diff", proposal_id)
            else:
                print("\n# (the operator can propose a manager's commit too)")
                hivegen("propose", agent, sha[:12])
                proposal_id = str(latest_proposal(config))
                print("# this one fails to build: hivegen puts everything back as it was")
            hivegen("approve", proposal_id, expect=outcome)
            # Deployed as deployed/1; the broken one failed, and alice still runs that.
            story.approved(agent, int(proposal_id), outcome is ExitCode.OK, "deployed/1")
            if outcome is ExitCode.OK:
                print("\n# the manager sees the decision (GET ...?wait=60 waits for one):")
                ask("GET", f"/proposals/{proposal_id}")
    hivegen("history", agent)

    # A base flake release reaches every agent: one build, a canary, health checks. In
    # this one bob's agent crashes on start: he is put back and the rollout stops.
    print(
        f"\n# a new release of the base flake ({demo.root / 'hyperhive'}); bob's agent\n"
        "# crashes on it. `upgrade` bumps the lock and rolls out: alice first (the canary),\n"
        "# then bob, who does not come up and is put back; the manager is not reached:"
    )
    release_base(demo.root, "2", crash=("bob",))
    hivegen("upgrade", "--canary", agent, expect=ExitCode.FAILED)
    hivegen("status")
    story.upgraded(canary=agent, put_back="bob", not_reached=config.hive.manager)
    _print_what_next(demo.config_path, config.layout.root, demo.root, agent)
    return ExitCode.OK


def _print_what_next(config_path: Path, state_root: Path, root: Path, agent: str) -> None:
    print(
        textwrap.dedent(f"""
        # The demo hive is up. Try, with --config {config_path}:
        #   hivegen ... rollback {agent} --to deployed/0   deploy its first config again
        #   hivegen ... stop {agent}; hivegen ... status
        #   hivegen ... render meta            the meta flake the containers are built from
        #   hivegen ... destroy bob            bob's repos and notes stay: spawn bob revives him
        #   hivegen ... serve --listen 127.0.0.1:7000
        #       the agents' sockets and the dashboard: open http://127.0.0.1:7000 and log in
        #       with the token in {state_root / "dashboard.token"} (on a real host
        #       keep it on its root-only socket: ssh -L 7000:/run/hivegen/dashboard.sock HOST)
        # Delete {root} when done.""")
    )


class _Story:
    """The demo checks that each step did what it told, from `status --json` and
    `history --json` read as any script would: a demo whose story did not happen exits
    1 naming the step, never 0 after output that says otherwise."""

    def __init__(self, run: Callable[..., int]) -> None:
        self._run = run

    def _document(self, *step: str) -> dict[str, Any]:
        import io
        import json

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = self._run(*step, "--json")
        if code != ExitCode.OK:
            raise HivegenError(f"the demo could not check its story: `hivegen {' '.join(step)}`")
        document: dict[str, Any] = json.loads(out.getvalue())
        return document

    def _expect(self, step: str, told: str, holds: Callable[[dict[str, Any]], bool]) -> None:
        agents = {row["name"]: row for row in self._document("status")["agents"]}
        if holds(agents):
            return
        seen = ", ".join(
            f"{name} {row['state']} {row['deployed_tag']}"
            f"{' (needs rebuild)' if row['needs_rebuild'] else ''}"
            for name, row in sorted(agents.items())
        )
        raise HivegenError(
            f"the demo's story did not happen at `{step}`: expected {told}; status says: {seen}",
            hint="a bug of hivegen's, or of this host's nix: please report it with the output",
        )

    def spawned(self, names: tuple[str, ...]) -> None:
        self._expect(
            "spawn",
            f"{', '.join(names)} running, each on deployed/0",
            lambda a: all(
                a[n]["state"] == "running" and a[n]["deployed_tag"] == "deployed/0" for n in names
            ),
        )

    def approved(self, agent: str, proposal_id: int, deployed: bool, runs: str) -> None:
        status = "deployed" if deployed else "failed"
        entries = self._document("history", agent)["entries"]
        recorded = next((e["status"] for e in entries if e["id"] == proposal_id), None)
        self._expect(
            f"approve {proposal_id}",
            f"proposal {proposal_id} {status} (history says {recorded}), {agent} running {runs}",
            lambda a: (
                recorded == status
                and a[agent]["state"] == "running"
                and a[agent]["deployed_tag"] == runs
            ),
        )

    def upgraded(self, canary: str, put_back: str, not_reached: str) -> None:
        self._expect(
            "upgrade",
            f"{canary} (the canary) up on the new base, {put_back} put back on the old one, "
            f"{not_reached} not reached, all three running",
            lambda a: (
                all(a[n]["state"] == "running" for n in (canary, put_back, not_reached))
                and a[canary]["needs_rebuild"] is False
                and a[put_back]["needs_rebuild"] is True
                and a[not_reached]["needs_rebuild"] is True
            ),
        )


@contextlib.contextmanager
def _demo_server(config: Any, flags: list[str]) -> Iterator[Callable[..., Any]]:
    """`hivegen serve` for the demo (in this process), and the manager's way to ask it."""
    import json
    import shlex
    import threading

    from hivegen import serve
    from hivegen.serve.client import ask

    print("\n# the operator runs the server: a socket per container, and the dashboard")
    print(f"$ hivegen {shlex.join([*flags, 'serve'])} &", flush=True)
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []
    options = serve.ServeOptions(
        dashboard_socket=serve.default_dashboard_socket(config),
        token_file=serve.default_token_file(config),
    )

    def run() -> None:
        try:
            serve.run(config, options, _serve_hive_factory(config), lambda _: ready.set(), stop)
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="demo-serve", daemon=True)
    thread.start()
    ready.wait(60)
    if failure or not ready.is_set():
        raise HivegenError(
            f"the demo's server did not start: {failure[0] if failure else 'timeout'}"
        )
    manager_socket = config.runtime_dir(config.agent(config.hive.manager)) / "hive.sock"

    def ask_as_manager(method: str, url: str, body: object = None) -> Any:
        data = f" -d {shlex.quote(json.dumps(body))}" if body is not None else ""
        print(f"$ curl --unix-socket /run/hive/hive.sock http://hive{url}{data}")
        print(f"# (inside {config.hive.manager}; here its socket is {manager_socket})")
        answer = ask(manager_socket, method, url, body)
        print(terminal(answer.body.decode(errors="replace")).rstrip(), flush=True)
        if answer.status >= 300:
            raise HivegenError(f"the demo's request was refused (HTTP {answer.status})")
        return answer.json()

    try:
        yield ask_as_manager
    finally:
        stop.set()
        thread.join(30)
