"""Rendering: pure functions from the hive model to `{relative path: text}`.

No timestamps, sorted inputs: the same model renders byte-identical text on every run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hivegen import nixlang
from hivegen.config import Config, Limits
from hivegen.names import AgentSpec, Role

if TYPE_CHECKING:
    import jinja2

AGENT_NIX = "agent.nix"
FLAKE_NIX = "flake.nix"
# The reference's own name, on purpose: systemd merges the drop-ins of every unit
# directory by file name, and one in /etc/systemd/system.control (hivegen's) masks a
# same-named one in /run/systemd/system, where the reference left its limits. Under any
# other name a stale reference drop-in sorting after ours would override hivegen's limits
# until a reboot.
LIMITS_DROPIN = "hyperhive-limits.conf"
# What earlier hivegen versions called theirs: removed when the new one is written.
LEGACY_DROPINS = ("hivegen-limits.conf",)


class UnfilteredValueError(TypeError):
    """A template printed a value that did not go through a nix_* filter (a bug)."""


@dataclass(frozen=True, slots=True)
class MetaModel:
    hyperhive_flake: str
    state_root: Path
    dashboard_port: int
    operator_pronouns: str
    committer_name: str
    committer_email: str
    agents: tuple[AgentSpec, ...]

    @classmethod
    def from_config(cls, config: Config, agent_names: Iterable[str]) -> MetaModel:
        specs = {name: config.agent(name) for name in agent_names}
        return cls(
            hyperhive_flake=config.hive.hyperhive_flake,
            state_root=config.hive.state_root,
            dashboard_port=config.hive.dashboard_port,
            operator_pronouns=config.hive.operator_pronouns,
            committer_name=config.hive.committer_name,
            committer_email=config.hive.committer_email,
            agents=tuple(specs[name] for name in sorted(specs)),
        )

    def applied_url(self, agent: AgentSpec) -> str:
        return f"git+file://{self.state_root / 'applied' / agent.name}"

    @property
    def mail_domain(self) -> str:
        _, _, domain = self.committer_email.rpartition("@")
        return domain or "hyperhive"


def _only_filtered(value: object) -> object:
    # Jinja's `finalize` sees every `{{ }}` value: anything not produced by a nix_*
    # filter is an escaping bug, caught at render time rather than shipped.
    if isinstance(value, nixlang.NixCode):
        return value
    raise UnfilteredValueError(
        f"template printed {value!r} without a nix_str/nix_ident/nix_comment filter"
    )


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hivegen", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 -- output is Nix, escaped by the nix_* filters
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_only_filtered,
    )
    env.filters["nix_str"] = nixlang.nix_str
    env.filters["nix_ident"] = nixlang.nix_ident
    env.filters["nix_comment"] = nixlang.nix_comment
    return env


def _render(template: str, **context: object) -> str:
    return _environment().get_template(template).render(**context)


def render_agent_nix(name: str) -> str:
    return _render("agent.nix.j2", name=name)


def render_agent_flake() -> str:
    return _render("flake.nix.j2")


def render_agent_repo(name: str) -> Mapping[str, str]:
    """The two files a proposed repo is seeded with."""
    return {AGENT_NIX: render_agent_nix(name), FLAKE_NIX: render_agent_flake()}


def render_meta(model: MetaModel) -> Mapping[str, str]:
    text = _render("meta-flake.nix.j2", model=model, Role=Role)
    return {FLAKE_NIX: text}


def render_limits_dropin(limits: Limits) -> str:
    """The systemd drop-in for `container@<c>.service` (values validated by config)."""
    return f"[Service]\nMemoryMax={limits.memory_max}\nCPUQuota={limits.cpu_quota}\n"


def dropin_relpath(container: str) -> str:
    return f"container@{container}.service.d/{LIMITS_DROPIN}"
