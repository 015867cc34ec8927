"""doctor's checks of the repos: each agent's proposed and applied repo, its deploy
order, and proposal tags the index (hive.sqlite) does not know, which --repair indexes
from the tags and the records beside them (git is the record; the index can always be
rebuilt from it, and is rebuilt as it was: tagrecords.py)."""

from __future__ import annotations

import os
from pathlib import Path

from hivegen import fsutil, policy, registry, safepath, snapshot
from hivegen.errors import HivegenError
from hivegen.findings import Check, Finding, Severity
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.repos import check_out_main
from hivegen.store import ProposalKind, ProposalStatus

MAIN = "refs/heads/main"
# The notes of proposals a hive from before tagrecords.py indexes again.
ADOPTED = "adopted from its tag by hivegen doctor --repair"
INDEXED = "indexed from its tags"


class RepoChecks:
    def __init__(self, hive: Hive, proposals: Proposals) -> None:
        self.hive = hive
        self.layout = hive.layout
        self.proposals = proposals

    def orphan_tags(self, name: str, indexed: set[int]) -> list[Finding]:
        """proposal/<id> tags the index does not know. A propose killed after writing
        its tag leaves one with nothing after it: adopted, pending, as the proposal it
        was, if its commit still passes the policy. One with approve or outcome tags (a
        lost or re-created hive.sqlite) is indexed as its tags say it ended."""
        git_dir = self.layout.applied(name) / ".git"
        found = []
        for proposal_id, sha in sorted(registry.proposal_tags(git_dir).items()):
            if proposal_id in indexed:
                continue
            later = [
                f"{step}/{proposal_id}"
                for step in ("approved", "building", "deployed", "failed", "denied")
                if registry.has_ref(git_dir, f"refs/tags/{step}/{proposal_id}")
            ]
            if later:
                found.append(self._restore_from_tags(name, proposal_id, sha, later))
                continue

            try:
                # The propose may have died before its policy check: checked again now.
                policy.check_commit(self.hive.git, self.layout.applied(name), name, sha)
            except HivegenError as exc:  # refused, or its commit cannot be read
                found.append(
                    Finding(
                        Check.APPLIED_REPO,
                        name,
                        f"proposal/{proposal_id} ({sha[:12]}) is not in the index, and its "
                        f"commit is refused: {exc.message}",
                        hint="not adopted; the tag is kept (hivegen never deletes one)",
                        severity=Severity.NOTE,
                    )
                )
                continue

            def adopt(i: int = proposal_id, n: str = name, sha: str = sha) -> str:
                self._index(n, i, sha, ProposalStatus.PENDING, ADOPTED)
                return f"{n}: proposal {i} ({sha[:12]}) adopted from its tag, pending"

            found.append(
                Finding(
                    Check.APPLIED_REPO,
                    name,
                    f"proposal/{proposal_id} ({sha[:12]}) is not in {self.layout.database}: a "
                    "propose was interrupted after its tag was written",
                    repair=adopt,
                )
            )
        return found

    def _restore_from_tags(
        self, name: str, proposal_id: int, sha: str, later: list[str]
    ) -> Finding:
        """deployed/<id>: deployed; failed/<id>, denied/<id>: so; approved/ or
        building/<id> alone: an approve that was interrupted (indexed as building, and
        settled by the next repair round). Every other column from the records."""
        steps = {tag.split("/", 1)[0] for tag in later}
        status = ProposalStatus.BUILDING
        for step, outcome in (
            ("deployed", ProposalStatus.DEPLOYED),
            ("failed", ProposalStatus.FAILED),
            ("denied", ProposalStatus.DENIED),
        ):
            if step in steps:
                status = outcome
                break

        def restore(n: str = name, i: int = proposal_id, s: ProposalStatus = status) -> str:
            self._index(n, i, sha, s, INDEXED)
            return f"{n}: proposal {i} ({sha[:12]}) indexed from its tags as {s}"

        return Finding(
            Check.APPLIED_REPO,
            name,
            f"proposal/{proposal_id} ({sha[:12]}) and {', '.join(later)} are not in "
            f"{self.layout.database}",
            hint=f"the tags in {self.layout.applied(name)} keep the record: --repair "
            "indexes it from them",
            repair=restore,
        )

    def _index(
        self, name: str, proposal_id: int, sha: str, status: ProposalStatus, unrecorded: str
    ) -> None:
        """Index a proposal as its tags (id, commit, status) and their records (every
        other column) say. What no record says, in a hive from before them, is indexed
        as it always was: kind apply, no previous_sha, no end time, the failed/ or
        denied/ tag's message as the error or note, else the note `unrecorded`."""
        recorded = self.proposals.recorded(name, proposal_id, sha)
        made, ended = recorded.created, recorded.outcomes.get(status)
        note = unrecorded if made is None else made.note
        error = ""
        if status is ProposalStatus.DENIED:
            note = (
                ended.text
                if ended is not None
                else self.proposals.tag_message(name, f"denied/{proposal_id}")
            )
        elif status is ProposalStatus.FAILED:
            error = (
                ended.text
                if ended is not None
                else self.proposals.tag_message(name, f"failed/{proposal_id}")
            )
        self.proposals.store.restore(
            proposal_id,
            name,
            sha,
            status,
            kind=ProposalKind.APPLY if made is None else made.kind,
            commit_ref=None if made is None else made.commit_ref,
            created=None if made is None else made.created,
            previous_sha=recorded.previous_sha,
            note=note,
            error=error,
            resolved=None if ended is None else ended.resolved,
        )

    def integrity(self, repo: Path, check: Check, agent: str | None) -> list[Finding]:
        """HEAD is hivegen's (`ref: refs/heads/main`), and every object the refs reach
        is there (`git fsck --connectivity-only`: cheap, no blob is hashed)."""
        head = repo / ".git" / "HEAD"
        if not head.parent.is_dir():
            return []  # no repo yet (the meta flake of an empty hive): other checks say so
        try:
            text = head.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            text = f"<unreadable: {exc.strerror}>"
        if text.strip() != "ref: refs/heads/main":

            def rewrite(path: Path = head) -> str:
                fsutil.write_atomic(path, "ref: refs/heads/main\n")
                return f"{path} set back to ref: refs/heads/main"

            shown = text.strip()[:60] or "empty"
            return [
                Finding(
                    check,
                    agent,
                    f"{head} is not hivegen's ({shown!r}): git cannot read {repo}",
                    repair=rewrite if registry.has_ref(repo / ".git", MAIN) else None,
                )
            ]
        result = self.hive.git.run(
            repo, "fsck", "--connectivity-only", "--no-dangling", check=False
        )
        if result.ok:
            return []
        problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        shown = "; ".join(problems[:3]) + (
            f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        )
        return [
            Finding(
                check,
                agent,
                f"{repo} is damaged: {shown}",
                hint=f"restore {repo} from a backup (git -C {repo} fsck lists all); a "
                "missing proposal commit is still in the manager's repo: propose it again",
            )
        ]

    def repos(self, name: str, *, busy: bool) -> list[Finding]:
        found = []
        git = self.hive.git
        proposed = self.layout.proposed(name)
        if not _proposed_has_main(self.layout.root, name):
            found.append(
                Finding(
                    Check.PROPOSED_REPO,
                    name,
                    f"proposed repo {proposed} is missing or has no commit",
                    hint="it is the manager's repo: hivegen does not recreate it",
                )
            )
        applied = self.layout.applied(name)
        git_dir = applied / ".git"
        found += self.integrity(applied, Check.APPLIED_REPO, name)
        if any(f.check is Check.APPLIED_REPO and f.agent == name for f in found):
            return found  # the checks below would only trip over the same damage
        main = registry.read_ref(git_dir, MAIN)
        deployed = _deployed_tags(git_dir)
        if main is not None and 0 not in deployed:
            roots = self.hive.git.out(applied, "rev-list", "--max-parents=0", MAIN).split()
            found.append(
                Finding(
                    Check.APPLIED_REPO,
                    name,
                    f"{name}'s applied repo has lost its deployed/0 tag (the seed commit)",
                    hint=(
                        f"if {roots[0][:12]}, the root of its main, is the seed: git -C "
                        f"{applied} tag deployed/0 {roots[0]}"
                        if len(roots) == 1
                        else f"git -C {applied} tag deployed/0 <the seed commit>"
                    )
                    + " (hivegen does not re-create a record it cannot prove)",
                )
            )
            if not deployed:
                return found
        if main is None or not deployed:
            found.append(
                Finding(
                    Check.APPLIED_REPO,
                    name,
                    f"applied repo {applied} has no main or no deployed/* tag",
                )
            )
            return found
        # The most recent deploy, by the order the tags record: ids need not be
        # approved in order, and clocks step.
        newest = self.proposals.last_deployed_sha(name)
        ordered = [r for r in registry.deploy_order(git_dir) if r.seq > 0]
        if not busy and not ordered and registry.unordered_deploys(git_dir):
            order = self.record_order(name, main, newest, deployed)
            if order:
                return found + order
        if newest is not None and main != newest and not busy:

            def move_back() -> str:
                git.run(applied, "update-ref", MAIN, newest)
                check_out_main(git, applied)
                return f"{name}: applied main moved back to its last deploy ({newest[:12]})"

            found.append(
                Finding(
                    Check.APPLIED_MAIN,
                    name,
                    f"applied main is {main[:12]}, but the last deploy is {newest[:12]}",
                    repair=move_back,
                )
            )
        elif not busy:
            found += self._work_tree(name, applied)
        return found

    def _work_tree(self, name: str, applied: Path) -> list[Finding]:
        diff = self.hive.git.run(applied, "diff", "--quiet", "HEAD", "--", check=False)
        if diff.ok:
            return []
        if diff.returncode != 1:
            # 1 is "differs"; anything else is git failing to look (a full disk, a lock):
            # not drift, and nothing a re-read of the tree would repair.
            tail = "; ".join(diff.stderr_tail()[-3:]) or f"exit {diff.returncode}"
            full = "No space left" in tail
            return [
                Finding(
                    Check.APPLIED_TREE,
                    name,
                    f"cannot compare the applied work tree of {name} with main: {tail}",
                    hint="free space, then run doctor again" if full else "run doctor again",
                )
            ]

        def reread() -> str:
            check_out_main(self.hive.git, applied)
            return f"{name}: applied work tree re-read from main"

        return [
            Finding(
                Check.APPLIED_TREE,
                name,
                f"applied work tree of {name} differs from main",
                repair=reread,
            )
        ]

    def record_order(
        self, name: str, main: str, newest: str | None, deployed: dict[int, str]
    ) -> list[Finding]:
        """Deploys from a hivegen that did not record their order. Applied main is the
        last one when it is one of them and the index (if it has them) agrees: --repair
        records that, and later deploys rank above it. Otherwise the operator decides."""
        applied = self.layout.applied(name)
        at_main = sorted(i for i, sha in deployed.items() if sha == main)
        if at_main and newest in (None, main):
            last = at_main[-1]

            def record(n: str = name, i: int = last, sha: str = main) -> str:
                seq = registry.next_deploy_seq(self.layout.applied(n) / ".git")
                self.hive.git.tag(self.layout.applied(n), f"deploy-seq/{seq}/{i}", sha)
                return f"{n}: deployed/{i} (its applied main) recorded as its last deploy"

            return [
                Finding(
                    Check.APPLIED_REPO,
                    name,
                    f"the order of {name}'s deploys is not recorded (a hive from before "
                    f"hivegen recorded it); applied main is deployed/{last}",
                    repair=record,
                )
            ]
        if newest is not None:
            return []  # the index knows the last deploy: the main check below applies
        return [
            Finding(
                Check.APPLIED_MAIN,
                name,
                f"applied main of {name} is {main[:12]}, which no deployed/* tag names, and "
                "neither the tags nor hive.sqlite say which deploy was the last",
                hint=f"choose it: git -C {applied} update-ref refs/heads/main deployed/<id>, "
                "then hivegen doctor --repair (tags: git -C "
                f"{applied} tag --list 'deployed/*')",
            )
        ]


def _proposed_has_main(root: Path, name: str) -> bool:
    """Read through directory fds, never a link (an unsafe path is reported as such)."""
    try:
        fd = snapshot.open_proposed_git(root, name)
    except (safepath.UnsafePath, OSError):
        return False
    try:
        return snapshot.read_main(fd, root / snapshot.proposed_git_rel(name)) is not None
    except snapshot.HostileRepo:
        return False
    finally:
        os.close(fd)


def _deployed_tags(git_dir: Path) -> dict[int, str]:
    refs = registry.refs_under(git_dir, registry.DEPLOYED_PREFIX)
    return {
        int(ref.rsplit("/", 1)[1]): sha
        for ref, sha in refs.items()
        if ref.rsplit("/", 1)[1].isdigit()
    }
