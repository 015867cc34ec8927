"""propose → approve → build → deploy, with automatic rollback on a failed build.

The applied repo keeps every step as a tag: `proposal/<id>` pins the manager's commit,
`approved/<id>` and `building/<id>` mark an approve under way, and it ends as
`deployed/<id>`, or as an annotated `failed/<id>` holding the build error (with `main`
put back), or `denied/<id>` holding the operator's note. Each step that makes a tag
records beside it what the index holds and the tags do not (tagrecords.py): the index
rebuilt from the applied repo is the index.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hivegen import activation, policy, registry, snapshot, tagrecords
from hivegen.errors import CommandError, HivegenError, UsageError
from hivegen.git import validate_commit_ref
from hivegen.health import HealthCheck
from hivegen.hive import Hive, unknown_agent
from hivegen.names import AgentSpec
from hivegen.nixlang import check_nix_string
from hivegen.repos import check_out_main, fetch_commit
from hivegen.store import Proposal, ProposalKind, ProposalStatus, Store

MAIN = "refs/heads/main"
DEPLOYED_TAG = re.compile(r"deployed/(0|[1-9][0-9]{0,17})\Z")
MAX_NOTE = 10_000


# What `propose AGENT [REV]` takes besides a commit id: the tip of the repo's main (the
# only branch hivegen reads; HEAD is accepted as the name a git user types first).
TIP_NAMES = ("main", "HEAD")


class BuildFailed(HivegenError):
    """An approved proposal did not build; everything was put back as it was."""


@dataclass(frozen=True, slots=True)
class PendingEntry:
    proposal: Proposal
    subject: str
    # Not clean only for a proposal the operator let in with --allow-flake-inputs.
    flake: policy.FlakeReport = policy.CLEAN
    # Its commit does not contain the agent's current deploy: approving it would undo
    # that deploy (a proposal made before a newer one was deployed).
    superseded: bool = False


@dataclass(frozen=True, slots=True)
class Deployment:
    proposal: Proposal
    sha: str
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    kind: str
    tag: str
    sha: str | None
    status: str
    when: float | None
    note: str


def validate_note(note: str) -> str:
    if len(note) > MAX_NOTE:
        raise UsageError(f"note is too long ({len(note)} characters; at most {MAX_NOTE})")
    try:
        check_nix_string(note)  # the same rule: no control characters but tab/newline/CR
    except HivegenError as exc:
        raise UsageError(f"invalid note: {exc.message}") from None
    return note


class Proposals:
    def __init__(self, hive: Hive) -> None:
        self.hive = hive
        self.git = hive.git
        self.layout = hive.layout
        self.store = Store(hive.layout.database)

    def _applied(self, agent: str) -> Path:
        return self.layout.applied(agent)

    def _tag(
        self,
        agent: str,
        name: str,
        sha: str,
        message: str | None = None,
        *,
        record: str | None = None,
    ) -> None:
        """Create a tag, or accept it if it already names `sha` (a resumed run). The
        step's `record` (tagrecords.py) first, and again when a step is run again (the
        last one wins); an outcome's record counts only beside its tag."""
        if record is not None:
            tagrecords.append(self.git, self._applied(agent), sha, record)
        existing = registry.read_ref(self._applied(agent) / ".git", f"refs/tags/{name}")
        if existing is not None:
            target = self.git.rev_parse(self._applied(agent), f"refs/tags/{name}")
            if target == sha:
                return
            raise HivegenError(
                f"tag {name} in {self._applied(agent)} already names {target}, not {sha}",
                hint="proposal ids are never reused; was hive.sqlite replaced?",
            )
        self.git.tag(self._applied(agent), name, sha, message)

    # -- propose ------------------------------------------------------------------------

    def propose(
        self, agent: str, rev: str = "main", *, allow_flake_inputs: bool = False
    ) -> Proposal:
        tip = rev in TIP_NAMES
        if not tip:
            validate_commit_ref(rev)  # before any git call: never an option or a refspec
        with self.hive.locked():
            self.hive.registered(agent)
            applied = self._applied(agent)
            # git never runs in (or is pointed at) the manager's repo: a private copy of
            # its objects is the only thing read (snapshot.py).
            with snapshot.snapshot(self.layout.root, self.git, agent) as snap:
                # The tip of main is read by hivegen from the repo's files, never by git.
                sha = snap.main if tip else self.git.rev_parse(snap.path, rev)
                if sha is None:
                    raise UsageError(
                        f"no commit {rev} in {agent}'s proposed repo "
                        f"({self.layout.proposed(agent)})"
                    )
                for waiting in self.store.pending():
                    if waiting.agent == agent and waiting.fetched_sha == sha:
                        raise UsageError(
                            f"{agent} {sha[:12]} is already proposal {waiting.id}, pending",
                            hint=f"hivegen diff {waiting.id}; hivegen approve {waiting.id}",
                        )
                above = registry.highest_proposal_id(self.hive.config)
                created = time.time()
                with self.store.connect() as db:
                    proposal_id = self.store.insert(
                        db, agent, ProposalKind.APPLY, rev, above=above, created=created
                    )
                    tag = f"proposal/{proposal_id}"
                    if registry.has_ref(applied / ".git", f"refs/tags/{tag}"):
                        raise HivegenError(
                            f"tag {tag} already exists in {applied}",
                            hint="proposal ids are never reused; was hive.sqlite replaced?",
                        )
                    fetch_commit(self.git, applied, snap, sha, f"refs/tags/{tag}")
                    try:
                        policy.check_commit(
                            self.git, applied, agent, sha, allow_flake_inputs=allow_flake_inputs
                        )
                        record = tagrecords.created(
                            proposal_id, ProposalKind.APPLY, rev, created, ""
                        )
                        tagrecords.append(self.git, applied, sha, record)
                    except BaseException:
                        self.git.run(applied, "tag", "-d", tag)
                        raise
                    db.execute(
                        "UPDATE proposals SET fetched_sha = ? WHERE id = ?", (sha, proposal_id)
                    )
        return self.store.get(proposal_id)

    def flake_report(self, proposal: Proposal) -> policy.FlakeReport:
        """How the proposal's flake differs from hivegen's (inputs shown on review)."""
        assert proposal.fetched_sha is not None
        return policy.report_of_commit(
            self.git, self._applied(proposal.agent), proposal.agent, proposal.fetched_sha
        )

    # -- read-only views ----------------------------------------------------------------

    def subject(self, proposal: Proposal) -> str:
        """The first line of the proposal's commit message (from the applied repo)."""
        if not proposal.fetched_sha:
            return ""
        applied = self._applied(proposal.agent)
        return self.git.out(applied, "log", "-1", "--format=%s", proposal.fetched_sha)

    def pending(self) -> list[PendingEntry]:
        entries = []
        for proposal in self.store.pending():
            subject = self.subject(proposal)
            if proposal.fetched_sha:
                entries.append(
                    PendingEntry(
                        proposal,
                        subject,
                        self.flake_report(proposal),
                        superseded=self.superseded(proposal),
                    )
                )
            else:
                entries.append(PendingEntry(proposal, subject))
        return entries

    def superseded(self, proposal: Proposal) -> bool:
        """True when the agent's current deploy is not in the proposal's history: its
        approve would silently revert what was deployed since it was made. A rollback
        is meant to go back, and is never superseded."""
        if proposal.kind is ProposalKind.ROLLBACK or proposal.fetched_sha is None:
            return False
        applied = self._applied(proposal.agent)
        main = registry.read_ref(applied / ".git", MAIN)
        if main is None or main == proposal.fetched_sha:
            return False
        result = self.git.run(
            applied, "merge-base", "--is-ancestor", main, proposal.fetched_sha, check=False
        )
        if result.returncode not in (0, 1):
            raise CommandError(result.argv, result.returncode, result.stderr_tail())
        return result.returncode == 1

    def diff(self, proposal_id: int) -> str:
        proposal = self.store.get(proposal_id)
        # No external diff driver or textconv filter: a repo's config must not run code.
        args = ("diff", "--no-ext-diff", "--no-textconv", MAIN, f"refs/tags/{proposal.tag}", "--")
        return self.git.out(self._applied(proposal.agent), *args) + "\n"

    def history(self, agent: str) -> list[HistoryEntry]:
        self.hive.spec(agent)
        applied = self._applied(agent)
        if not registry.has_ref(applied / ".git", registry.DEPLOYED_ZERO):
            raise unknown_agent(agent, registry.scan(self.hive.config))
        entries = [
            HistoryEntry(
                id=p.id,
                kind=str(p.kind),
                tag=_final_tag(p),
                sha=p.fetched_sha,
                status=str(p.status),
                when=p.resolved or p.created,
                note=p.note or _headline(p.error),
            )
            for p in self.store.of_agent(agent)
        ]
        seed_sha = registry.read_ref(applied / ".git", registry.DEPLOYED_ZERO)
        if seed_sha is None:
            return entries  # the tag was lost (doctor says so)
        seeded = self.git.out(applied, "log", "-1", "--format=%ct", "refs/tags/deployed/0")
        entries.append(
            HistoryEntry(
                0,
                "seed",
                "deployed/0",
                seed_sha,
                "deployed",
                float(seeded),
                "seeded from the proposed repo",
            )
        )
        return entries

    # -- deny ---------------------------------------------------------------------------

    def deny(self, proposal_id: int, note: str = "") -> Proposal:
        validate_note(note)
        self.store.get(proposal_id)
        with self.hive.locked():
            proposal = self._pending(proposal_id)
            assert proposal.fetched_sha is not None
            resolved = time.time()
            record = tagrecords.outcome(proposal.id, ProposalStatus.DENIED, resolved, note)
            self._tag(
                proposal.agent, f"denied/{proposal.id}", proposal.fetched_sha, note, record=record
            )
            self.store.set_status(proposal.id, ProposalStatus.DENIED, note=note, resolved=resolved)
        return self.store.get(proposal_id)

    def _pending(self, proposal_id: int) -> Proposal:
        proposal = self.store.get(proposal_id)
        if proposal.status is not ProposalStatus.PENDING:
            when = (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(proposal.resolved))
                if proposal.resolved
                else ""
            )
            raise HivegenError(
                f"proposal {proposal.id} is {proposal.status}"
                + (f" (since {when})" if when else "")
                + ": only a pending proposal can be approved or denied",
            )
        return proposal

    # -- approve and rollback -----------------------------------------------------------

    def approve(self, proposal_id: int, *, force: bool = False) -> Deployment:
        self.store.get(proposal_id)  # an unknown id is refused before the lock is taken
        with self.hive.locked():
            proposal = self.store.get(proposal_id)
            if proposal.status is ProposalStatus.BUILDING:
                # Only a killed approve leaves this (we hold the lock): finish or undo it.
                proposal = self.recover(proposal)
                if proposal.status is ProposalStatus.DEPLOYED:
                    return Deployment(
                        proposal, proposal.fetched_sha or "", ("finished an interrupted deploy",)
                    )
            proposal = self._pending(proposal_id)
            if not force:
                self.refuse_superseded(proposal, "--force deploys it anyway")
            return self._deploy(proposal)

    def refuse_superseded(self, proposal: Proposal, force_hint: str) -> None:
        """Raise if `proposal` was made before the agent's current deploy and does not
        contain it (approving it would revert that deploy); `force_hint` ends the hint,
        after `hivegen approve ID`."""
        if not self.superseded(proposal):
            return
        deployed = registry.deployed(self._applied(proposal.agent) / ".git")
        raise HivegenError(
            f"proposal {proposal.id} ({proposal.agent} "
            f"{(proposal.fetched_sha or '')[:12]}) was made before "
            f"{deployed.tag or 'the current deploy'} and does not contain it: "
            "approving it would revert that deploy",
            hint=f"hivegen diff {proposal.id} shows what it would change; "
            f"hivegen approve {proposal.id} {force_hint}",
        )

    def check_rollback(self, agent: str, to: str) -> None:
        """Refuse what `rollback(agent, to)` would refuse, without the lock and without
        changing anything: for a front end to ask only about a rollback that can run."""
        interrupted = [p for p in self.store.in_status(ProposalStatus.BUILDING) if p.agent == agent]
        self._rollback_sha(agent, to, interrupted)

    def rollback(self, agent: str, to: str) -> Deployment:
        with self.hive.locked():
            # A re-run after an interrupted rollback to the same tag finishes that one:
            # never a second rollback beside a first left `building`.
            settled = self._settle_building(agent)
            sha = self._rollback_sha(agent, to, settled)
            for earlier in settled:
                if earlier.kind is ProposalKind.ROLLBACK and earlier.commit_ref == to:
                    if earlier.status is ProposalStatus.DEPLOYED:
                        return Deployment(
                            earlier, sha, (f"finished an interrupted rollback to {to}",)
                        )
                    if earlier.status is ProposalStatus.PENDING:
                        return self._deploy(earlier)
            above = registry.highest_proposal_id(self.hive.config)
            created, note = time.time(), f"rollback to {to}"
            with self.store.connect() as db:
                proposal_id = self.store.insert(
                    db, agent, ProposalKind.ROLLBACK, to, above=above, created=created
                )
                record = tagrecords.created(proposal_id, ProposalKind.ROLLBACK, to, created, note)
                self._tag(agent, f"proposal/{proposal_id}", sha, record=record)
                db.execute(
                    "UPDATE proposals SET fetched_sha = ?, note = ? WHERE id = ?",
                    (sha, note, proposal_id),
                )
            return self._deploy(self.store.get(proposal_id))

    def _rollback_sha(self, agent: str, to: str, interrupted: Sequence[Proposal]) -> str:
        """The commit of `to`, unless the agent runs it already (and no rollback to it
        was interrupted, which a re-run finishes)."""
        if not DEPLOYED_TAG.match(to):
            raise UsageError(f"invalid target {to!r}: must be deployed/<id>, e.g. deployed/0")
        self.hive.registered(agent)
        applied = self._applied(agent)
        sha = registry.read_ref(applied / ".git", f"refs/tags/{to}")
        if sha is None:
            raise UsageError(f"{agent} has no tag {to}", hint=f"hivegen history {agent}")
        if sha == registry.read_ref(applied / ".git", MAIN) and not any(
            p.kind is ProposalKind.ROLLBACK and p.commit_ref == to for p in interrupted
        ):
            current = registry.deployed(applied / ".git").tag or to
            raise UsageError(
                f"{agent} already runs {current} ({sha[:12]}), the commit of {to}: "
                "nothing to roll back",
                hint=f"hivegen history {agent} lists the other deploys",
            )
        return sha

    def _settle_building(self, agent: str, *, but: int | None = None) -> list[Proposal]:
        """Finish or undo the agent's approves that were killed (status `building`), as
        they ended; we hold the lock, so no approve of ours is running."""
        return [
            self.recover(p)
            for p in self.store.in_status(ProposalStatus.BUILDING)
            if p.agent == agent and p.id != but
        ]

    def _deploy(self, proposal: Proposal) -> Deployment:
        hive, git, agent = self.hive, self.git, proposal.agent
        # Another approve of this agent, killed half-way, is settled first: a deploy on
        # top of it would leave it `building` with main moved under it.
        self._settle_building(agent, but=proposal.id)
        spec = hive.registered(agent)
        hive.require_container(spec)
        hive.verify_binds(spec)  # an unsafe bind source stops the deploy before any step
        hive.check_port(spec, running_only=True)
        sha = proposal.fetched_sha
        assert sha is not None
        applied = self._applied(agent)
        old_main = registry.read_ref(applied / ".git", MAIN)
        assert old_main is not None
        steps = []
        self.store.set_status(proposal.id, ProposalStatus.BUILDING, previous_sha=old_main)
        try:
            record = tagrecords.approved(proposal.id, old_main)
            self._tag(agent, f"approved/{proposal.id}", sha, record=record)
            self._tag(agent, f"building/{proposal.id}", sha)
            # Compare-and-swap: main moves only from the sha it had when we read it.
            git.run(applied, "update-ref", MAIN, sha, old_main)
            check_out_main(git, applied)
        except HivegenError as exc:
            # A stale git lock, a full disk: not the proposal's fault, nothing built.
            self._unstart(proposal, old_main, exc, f"start the deploy of proposal {proposal.id}")
        system_before = hive.host.system(spec.container)
        was_running = hive.host.unit_state(spec.container).running
        try:
            hive.meta.prepare(agent)
        except HivegenError as exc:
            self._unstart(
                proposal, old_main, exc, f"stage {agent}'s new commit in the meta flake", meta=True
            )
        try:
            hive.host.update(spec.container, hive.host.flake_ref(agent))
        except HivegenError as exc:
            error, resolved = error_text(exc), time.time()
            self._undo_deploy(proposal, old_main, error, resolved)
            put_back = self._put_back_system(spec, system_before, error)
            self.store.set_status(
                proposal.id, ProposalStatus.FAILED, error=error, resolved=resolved
            )
            raise BuildFailed(
                f"proposal {proposal.id} ({agent} {sha[:12]}) failed to build or activate; "
                f"{agent} is back on {old_main[:12]}, as before{put_back}:\n{error}",
                hint=f"the error is kept in tag failed/{proposal.id}: hivegen history {agent}",
            ) from exc
        if was_running and system_before is not None:
            steps += self._check_up(proposal, spec, old_main, system_before)
        # Its place in the agent's deploy order first (registry.DEPLOY_SEQ_PREFIX): a
        # deployed/<id> tag never exists without one. A new seq even on a retry: deploys
        # made since must not rank above this one.
        seq = registry.next_deploy_seq(applied / ".git")
        resolved = time.time()
        self._tag(agent, f"deploy-seq/{seq}/{proposal.id}", sha)
        record = tagrecords.outcome(proposal.id, ProposalStatus.DEPLOYED, resolved)
        self._tag(agent, f"deployed/{proposal.id}", sha, record=record)
        hive.record_system(spec)
        hive.meta.finalize(agent, f"deployed/{proposal.id}", sha)
        self.store.set_status(proposal.id, ProposalStatus.DEPLOYED, resolved=resolved)
        steps.append(f"deployed {sha[:12]} as deployed/{proposal.id}")
        steps += hive.apply_host_files(spec)
        return Deployment(self.store.get(proposal.id), sha, tuple(steps))

    def _check_up(
        self, proposal: Proposal, spec: AgentSpec, old_main: str, system_before: Path
    ) -> list[str]:
        """The health check of a running agent switched to a new system; one that does
        not come up is undone as a failed build is, and put back on the system it ran."""
        hive, agent, sha = self.hive, proposal.agent, proposal.fetched_sha or ""
        if hive.host.system(spec.container) == system_before:
            return []  # the same system (a rollback to it, a no-op change): nothing new ran
        verdict = HealthCheck(hive).check(spec)
        if verdict.healthy:
            return [f"{agent} is up ({verdict.elapsed:.1f}s)"]
        error, resolved = (
            f"{agent} did not come up on its new system: {verdict.reason}",
            time.time(),
        )
        self._undo_deploy(proposal, old_main, error, resolved)
        put_back = activation.put_back_system(hive, spec, system_before)
        self.store.set_status(proposal.id, ProposalStatus.FAILED, error=error, resolved=resolved)
        raise BuildFailed(
            f"proposal {proposal.id} ({agent} {sha[:12]}) built, but {error}; "
            f"{agent} is back on {old_main[:12]} and the system it ran{put_back}",
            hint=f"the reason is kept in tag failed/{proposal.id}: hivegen history {agent}",
        )

    def _undo_deploy(self, proposal: Proposal, old_main: str, error: str, resolved: float) -> None:
        """After a failed build or health check: failed/<id> with the error, main and the
        meta flake back where they were."""
        agent, applied, sha = proposal.agent, self._applied(proposal.agent), proposal.fetched_sha
        assert sha is not None
        record = tagrecords.outcome(proposal.id, ProposalStatus.FAILED, resolved, error)
        self._tag(agent, f"failed/{proposal.id}", sha, error, record=record)
        self.git.run(applied, "update-ref", MAIN, old_main, sha)
        check_out_main(self.git, applied)
        self.hive.meta.abort(agent)

    def _unstart(
        self,
        proposal: Proposal,
        old_main: str,
        error: HivegenError,
        doing: str,
        *,
        meta: bool = False,
    ) -> NoReturn:
        """After an error that is not the proposal's (a stale git lock, a damaged
        flake.lock, a full disk): main, and with `meta` the meta flake, back where they
        were and the proposal back to pending; then raise, saying so."""
        applied = self._applied(proposal.agent)
        hint = error.hint or f"fix the cause (hivegen doctor), then: hivegen approve {proposal.id}"
        try:
            if registry.read_ref(applied / ".git", MAIN) != old_main:
                self.git.run(applied, "update-ref", MAIN, old_main)
            check_out_main(self.git, applied)
            if meta:
                self.hive.meta.abort(proposal.agent)
        except HivegenError as undo:
            # Left `building`: the next approve (or doctor --repair) finishes the undo.
            raise HivegenError(
                f"could not {doing}: {error.message}\nand undoing it failed too: "
                f"{undo.message}\nnothing was built",
                hint=hint,
            ) from error
        self.store.set_status(proposal.id, ProposalStatus.PENDING)
        raise HivegenError(
            f"could not {doing}: {error.message}\nnothing was built; proposal "
            f"{proposal.id} is still pending",
            hint=hint,
        ) from error

    def _put_back_system(self, spec: AgentSpec, before: Path | None, error: str) -> str:
        """After a failed update: if nixos-container had already moved the profile (the
        build succeeded, the reload's `switch-to-configuration test` failed), rebuild
        from the restored meta flake so the container runs, and boots, its old system.
        That build is the old one, already in the store. Returns words for the message."""
        host = self.hive.host
        if host.system(spec.container) == before:
            return ""
        try:
            host.update(spec.container, host.flake_ref(spec.name))
            self.hive.record_system(spec)
        except HivegenError as exc:
            raise HivegenError(
                f"{spec.name}'s new system was installed but failed to activate "
                f"({_headline(error)}), and putting the old one back failed too: "
                f"{exc.message}",
                hint=f"hivegen rebuild {spec.name} retries; git and the meta flake are "
                "already back on the last deploy",
            ) from exc
        return " (its new system had been installed: the old one is back in place)"

    def last_deployed_sha(self, agent: str) -> str | None:
        """What the agent's applied main should be: its last deploy's commit, by the
        order its tags record (never by a clock). For a hive whose deploys predate that
        record, the index says; None when nothing can tell (doctor asks the operator)."""
        told = self._tagged_last_deploy(agent)
        if told is not None:
            return told
        last = self.store.last_deployed(agent)
        return last.fetched_sha if last is not None else None

    def _tagged_last_deploy(self, agent: str) -> str | None:
        """The last deploy's commit as the tags tell it, None if they cannot (deploys
        from before their order was recorded)."""
        git_dir = self._applied(agent) / ".git"
        ordered = [r for r in registry.deploy_order(git_dir) if r.seq > 0]
        if ordered:
            return ordered[-1].sha
        if not registry.unordered_deploys(git_dir):
            sha = registry.read_ref(git_dir, registry.DEPLOYED_ZERO)
            if sha is None:
                raise HivegenError(f"{self._applied(agent)} has no deployed/0 tag")
            return sha
        return None

    def recorded(self, agent: str, proposal_id: int, sha: str) -> tagrecords.Recorded:
        """What the applied repo records of a proposal beside its tags (tagrecords.py)."""
        note = tagrecords.read(self.git, self._applied(agent), sha)
        return tagrecords.parse(note, proposal_id)

    def tag_message(self, agent: str, tag: str) -> str:
        """An annotated tag's message (a failed/<id>'s error, a denied/<id>'s note), as a
        hive from before the records kept the text: whitespace at its ends is lost."""
        return self.git.out(self._applied(agent), "tag", "-l", "--format=%(contents)", tag)

    def recover(self, proposal: Proposal) -> Proposal:
        """Finish or undo an approve that was killed half-way (status `building`). Its
        outcome, if it has one, as its tag's record says (the time it ended, its error)."""
        agent = proposal.agent
        applied = self._applied(agent)
        git_dir = applied / ".git"
        sha = proposal.fetched_sha
        assert sha is not None
        if registry.has_ref(git_dir, f"refs/tags/deployed/{proposal.id}"):
            if self.hive.meta.is_pending():
                self.hive.meta.finalize(agent, f"deployed/{proposal.id}", sha)
            ended = self.recorded(agent, proposal.id, sha).outcomes.get(ProposalStatus.DEPLOYED)
            resolved = None if ended is None else ended.resolved
            self.store.set_status(proposal.id, ProposalStatus.DEPLOYED, resolved=resolved)
            return self.store.get(proposal.id)
        # The deploy the tags name first: a previous_sha indexed from a record may be an
        # approve's that never started, with deploys made since (going back to it would
        # undo them). They agree whenever the approve was really interrupted.
        last_good = (
            self._tagged_last_deploy(agent)
            or proposal.previous_sha
            or self.last_deployed_sha(agent)
        )
        if last_good is None:
            raise HivegenError(
                f"proposal {proposal.id} ({agent}) was interrupted, and which deploy "
                f"{agent} was on before it cannot be told: its deploys predate the order "
                "hivegen records, and hive.sqlite does not say",
                hint=f"git -C {self._applied(agent)} tag --list 'deployed/*' shows them; "
                "hivegen doctor says what to run",
            )
        main = registry.read_ref(git_dir, MAIN)
        if main != last_good:
            self.git.run(applied, "update-ref", MAIN, last_good)
        check_out_main(self.git, applied)
        self.hive.meta.abort(agent)
        if registry.has_ref(git_dir, f"refs/tags/failed/{proposal.id}"):
            ended = self.recorded(agent, proposal.id, sha).outcomes.get(ProposalStatus.FAILED)
            if ended is not None:
                error, resolved = ended.text, ended.resolved
            else:
                error, resolved = self.tag_message(agent, f"failed/{proposal.id}"), None
            self.store.set_status(
                proposal.id, ProposalStatus.FAILED, error=error, resolved=resolved
            )
        else:
            self.store.set_status(proposal.id, ProposalStatus.PENDING)
        return self.store.get(proposal.id)


def _final_tag(proposal: Proposal) -> str:
    match proposal.status:
        case ProposalStatus.PENDING:
            return f"proposal/{proposal.id}"
        case ProposalStatus.BUILDING:
            return f"building/{proposal.id}"
        case ProposalStatus.DEPLOYED:
            return f"deployed/{proposal.id}"
        case ProposalStatus.FAILED:
            return f"failed/{proposal.id}"
        case ProposalStatus.DENIED:
            return f"denied/{proposal.id}"


def _headline(error: str) -> str:
    """The line of a build error worth a table cell: nix's `error: <message>` line. Nix
    2.8 starts with it; 2.26 starts with a bare `error:`, then the trace, and ends with
    it, so the last such line with a message is the one."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    messages = [line for line in lines if line.startswith("error:") and line != "error:"]
    if messages:
        return messages[-1]
    return lines[0] if lines else ""


def error_text(error: HivegenError) -> str:
    """A failed build's error as the operator reads it: nix's stderr (its noise is never
    kept: nix.is_noise)."""
    if isinstance(error, CommandError) and error.stderr_tail:
        return "\n".join(error.stderr_tail)
    return error.message
