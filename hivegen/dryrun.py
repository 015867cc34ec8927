"""`approve --dry-run`: build a proposal's system as approve would, deploy nothing.

approve stages the agent's new commit in the meta flake itself: it moves the applied
repo's `main`, re-locks `agent-<n>` in the meta flake's work tree and has
`nixos-container update` build and install the system. A dry run must leave all of that
as it was, so it does the same staging in a private copy of the meta flake, made under
the state root and removed afterwards: `agent-<n>` is locked there to the proposal's
commit (`proposal/<id>` in the applied repo, which is never moved), the lock staged as
approve stages it, and the agent's system is evaluated and built from that copy with
the attribute approve builds. The meta flake's inputs are its only inputs and the copy
holds the same files, so the system is the one approve would install. Nothing else is
written: no tag, no ref, no store status, no container touched; the built system is not
a GC root (a later `nix-collect-garbage` may remove it; approve builds it again).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hivegen import meta, nix
from hivegen.errors import CommandError, HivegenError
from hivegen.proposals import Proposals, error_text
from hivegen.store import Proposal, ProposalStatus


@dataclass(frozen=True, slots=True)
class DryRun:
    proposal: Proposal
    # The system approve would install, or None when it did not build (then `error`).
    system: Path | None
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.proposal.id,
            "agent": self.proposal.agent,
            "sha": self.proposal.fetched_sha,
            "ok": self.error is None,
            "system": str(self.system) if self.system else None,
            "error": self.error,
        }


def dry_run(
    proposals: Proposals,
    proposal_id: int,
    *,
    force: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> DryRun:
    """Build proposal `proposal_id`'s system; a failed build is a result, not a raise."""
    hive = proposals.hive
    proposals.store.get(proposal_id)  # an unknown id is refused before the lock is taken
    # Held so that no approve stages its lock in the meta flake while it is copied.
    with hive.locked():
        proposal = proposals.store.get(proposal_id)
        if proposal.status is not ProposalStatus.PENDING:
            hint = (
                f"an approve of it was interrupted: hivegen approve {proposal.id} finishes it"
                if proposal.status is ProposalStatus.BUILDING
                else None
            )
            raise HivegenError(
                f"proposal {proposal.id} is {proposal.status}: only a pending proposal "
                "can be built with --dry-run",
                hint=hint,
            )
        hive.registered(proposal.agent)
        sha = proposal.fetched_sha
        assert sha is not None
        if not force:
            proposals.refuse_superseded(proposal, "--dry-run --force builds it anyway")
        hive.meta.require_synced()
        if hive.meta.is_pending():
            raise HivegenError(
                f"the meta flake at {hive.layout.meta} holds a deploy or sync that did not finish",
                hint="hivegen doctor says what to run",
            )
        with tempfile.TemporaryDirectory(prefix=".hivegen-dryrun-", dir=hive.layout.root) as tmp:
            copy = Path(tmp, "meta")
            shutil.copytree(hive.layout.meta, copy, symlinks=True)
            env = hive.host.env
            try:
                _stage(proposals, copy, proposal, sha)
                built = nix.build_systems(copy, [proposal.agent], env=env, on_line=on_line)
            except CommandError as exc:
                return DryRun(proposal, None, error_text(exc))
    return DryRun(proposal, built[proposal.agent])


def _stage(proposals: Proposals, copy: Path, proposal: Proposal, sha: str) -> None:
    """In the copy, what approve's `meta.prepare` does in the meta flake: `agent-<n>`
    re-locked to the commit (here named by rev, as applied main is not moved), staged."""
    applied = proposals.layout.applied(proposal.agent)
    name = meta.input_name(proposal.agent)
    nix.run("flake", "lock", "--override-input", name, f"git+file://{applied}?rev={sha}", str(copy))
    proposals.git.run(copy, "add", "--", meta.LOCK)
