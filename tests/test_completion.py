"""`hivegen completion bash|zsh|fish` and `hivegen man`, generated from the parser.

bash really loads the script and its registered function is driven as readline drives
it (COMP_WORDS, COMP_CWORD); zsh loads it through compinit and completes a line typed
on a pseudo-terminal (zpty), TAB and all; fish answers `complete -C`. Agent names come
from a hive whose registry is laid out as files, as registry.scan reads it. zsh and fish
are required in CI (CI=true), used where installed elsewhere; groff and man where
installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hivegen.cli import build_parser, main
from hivegen.cli.completion import Shell, completion_script
from hivegen.cli.manpage import escape

BIN = Path(sys.executable).parent
HIVEGEN = BIN / "hivegen"
# Drives the function `complete -p hivegen` registered, with the words given as
# arguments (the last one being completed), and prints what it offers, one a line.
DRIVE = r"""
source "$1" || exit 9
shift
spec=$(complete -p hivegen) || exit 8
function=${spec##*-F }
function=${function%% *}
COMP_WORDS=("$@")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
"$function" hivegen "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


# zsh DRIVE_ZSH DIR WORDS...: an interactive zsh on a pseudo-terminal, with _hivegen
# from DIR loaded by compinit, is typed WORDS and a TAB; it prints each candidate its
# completion adds, one a line. (compadd is wrapped to print what it adds; the markers
# are split in the source so that the terminal's echo of these lines never matches.)
DRIVE_ZSH = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=''; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () {'
zpty -w z '  local -a hits; builtin compadd -O hits "$@"'
zpty -w z '  (( $#hits )) && print -rl -- "<hi""t>"${^hits}; builtin compadd "$@"'
zpty -w z '}'
zpty -w z 'zstyle ":completion:*" menu no; zle -N done-typing _done; _done () { print "<do""ne>" }'
zpty -w z "bindkey '^I' complete-word; bindkey '^X' done-typing"
shift
zpty -n -w z "${*}"$'\t'
zpty -n -w z $'\C-x'
while zpty -r z line; do
  [[ $line == *'<done>'* ]] && break
  [[ $line == *'<hit>'* ]] && print -r -- ${${line##*<hit>}%%$'\r'}
done
zpty -d z
"""


def needs(shell: str) -> None:
    """Skip without `shell`, except in CI, which installs it (a skip would hide a fail)."""
    if shutil.which(shell) is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{shell} is not installed (.ci/run installs it)")
        pytest.skip(f"{shell} is not installed")


def verb_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    """Every verb and sub-verb ("meta sync") the parser has."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(" ".join((*path, name)))
                found += verb_paths(sub, (*path, name))
    return found


def make_hive(tmp_path: Path) -> Path:
    """A hive.toml and a registry: alice and the manager registered, bob destroyed
    (tombstone), and directories whose names are no agent name, which never complete."""
    state = tmp_path / "state"
    for name in ("alice", "hm1nd", "bob", "Evil", "x;rm", "-rf"):
        tag = state / "applied" / name / ".git" / "refs" / "tags" / "deployed" / "0"
        tag.parent.mkdir(parents=True)
        tag.write_text("0" * 40 + "\n")
    (state / "applied" / "bob" / ".git" / "hivegen-tombstone").write_text("")
    config = tmp_path / "hive.toml"
    config.write_text(
        f'[hive]\nstate_root = "{state}"\n[host]\nruntime = "simulated"\n'
        f'simulated_root = "{tmp_path / "host"}"\n'
    )
    return config


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hive(tmp_path_factory.mktemp("hive"))


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = subprocess.run(
        [str(HIVEGEN), "completion", "bash"], capture_output=True, text=True, check=True
    )
    path = tmp_path_factory.mktemp("completion") / "hivegen.bash"
    path.write_text(out.stdout)
    return path


def env(**extra: str) -> dict[str, str]:
    # The hivegen the scripts call at TAB time is this checkout's.
    base = {k: v for k, v in os.environ.items() if k != "HIVEGEN_CONFIG"}
    return {**base, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def complete(script: Path, *words: str, **extra: str) -> list[str]:
    out = subprocess.run(
        ["bash", "-c", DRIVE, "drive", str(script), "hivegen", *words],
        capture_output=True,
        text=True,
        check=False,
        env=env(**extra),
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # nothing noisy on the operator's terminal
    return [line for line in out.stdout.splitlines() if line]


def test_the_bash_script_loads_as_the_readme_says() -> None:
    out = subprocess.run(
        ["bash", "-c", "source <(hivegen completion bash) && complete -p hivegen"],
        capture_output=True,
        text=True,
        check=False,
        env=env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.startswith("complete ")
    assert out.stdout.split()[-1] == "hivegen"


def test_bash_completes_verbs_and_sub_verbs(bash_script: Path) -> None:
    assert complete(bash_script, "sta") == ["start", "status"]
    assert complete(bash_script, "meta", "") == ["sync", "update"]
    assert complete(bash_script, "completion", "") == ["bash", "zsh", "fish"]
    assert complete(bash_script, "--config", "x.toml", "rol") == ["rollback", "rollout"]


def test_bash_completes_the_agents_of_the_hive(bash_script: Path, hive: Path) -> None:
    registered = ["alice", "hm1nd"]  # not bob (destroyed), nor the names no agent has
    assert complete(bash_script, "start", "", HIVEGEN_CONFIG=str(hive)) == registered
    assert complete(bash_script, "start", "a", HIVEGEN_CONFIG=str(hive)) == ["alice"]
    # The --config typed on the line is the hive asked, before or after the verb.
    assert complete(bash_script, "--config", str(hive), "stop", "") == registered
    assert complete(bash_script, "destroy", "--config", str(hive), "h") == ["hm1nd"]
    for words in (
        ["status", "alice", ""],
        ["rollout", "--canary", ""],
        ["render", "meta", "--agent", ""],
        ["history", ""],
        ["propose", ""],
    ):
        assert complete(bash_script, *words, HIVEGEN_CONFIG=str(hive)) == registered, words
    # A spawn request's name is not an agent's yet.
    assert complete(bash_script, "dismiss", "", HIVEGEN_CONFIG=str(hive)) == []


def test_bash_completes_nothing_quietly_without_a_hive(bash_script: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert complete(bash_script, "--config", str(missing), "start", "") == []
    broken = tmp_path / "broken.toml"
    broken.write_text("[hive\n")
    assert complete(bash_script, "start", "", HIVEGEN_CONFIG=str(broken)) == []


def test_bash_completes_global_options_after_the_verb(bash_script: Path) -> None:
    offered = complete(bash_script, "start", "alice", "--")
    assert {"--config", "--verbose", "--debug", "--no-wait", "--json"} <= set(offered)
    assert "-v" in complete(bash_script, "status", "-")
    assert complete(bash_script, "--no") == ["--no-wait"]
    assert complete(bash_script, "render", "agent-nix", "alice", "--color", "") == [
        "auto",
        "always",
        "never",
    ]


def test_list_names_prints_only_agent_names(
    hive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "--names", "--config", str(hive)]) == 0
    assert capsys.readouterr().out == "alice\nhm1nd\n"
    empty = tmp_path / "empty.toml"
    empty.write_text(f'[hive]\nstate_root = "{tmp_path / "none"}"\n')
    assert main(["list", "--names", "--config", str(empty)]) == 0
    assert capsys.readouterr().out == ""  # no hive yet: no line at all


@pytest.mark.parametrize("shell", list(Shell))
def test_every_verb_and_option_is_in_each_script(shell: Shell) -> None:
    """The scripts stay in sync with the parser: generated from it, they name every
    verb, sub-verb and option string it has."""
    parser = build_parser()
    script = completion_script(build_parser(), shell)
    words = set(re.split(r"[\s\"'(){},\[\]=]+", script))
    for path in verb_paths(parser):
        assert path.split()[-1] in words, path
    options = {o for a in parser._actions for o in a.option_strings}
    for option in options - {"-h", "--help"}:
        stripped = option.lstrip("-")
        assert option in words or stripped in words, option
    assert "_hivegen_agents" in script


def test_zsh_and_fish_scripts(tmp_path: Path, hive: Path) -> None:
    zsh = completion_script(build_parser(), Shell.ZSH)
    assert zsh.startswith("#compdef hivegen")
    assert "list --names" in zsh
    fish = completion_script(build_parser(), Shell.FISH)
    assert "complete -c hivegen" in fish
    assert "(_hivegen_agents)" in fish
    # Each verb described by its one-line --help summary, not a cut description.
    assert "deny:'refuse a proposal'" in zsh
    assert "-a deny -d 'refuse a proposal'" in fish


@pytest.fixture(scope="module")
def zsh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for fpath with `_hivegen`, as the package installs it for zsh."""
    out = subprocess.run(
        [str(HIVEGEN), "completion", "zsh"], capture_output=True, text=True, check=True
    )
    path = tmp_path_factory.mktemp("zsh")
    (path / "_hivegen").write_text(out.stdout)
    return path


def shell_lines(argv: list[str], **extra: str) -> list[str]:
    """What a shell run of `argv` prints, its empty lines left out; it must succeed."""
    out = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=60, env=env(**extra)
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def zsh_complete(zsh_dir: Path, *words: str, **extra: str) -> set[str]:
    argv = ["zsh", "-f", "-c", DRIVE_ZSH, "drive", str(zsh_dir), "hivegen", *words]
    return set(shell_lines(argv, **extra))


def test_zsh_completes_verbs_and_the_agents_of_the_hive(zsh_dir: Path, hive: Path) -> None:
    needs("zsh")
    subprocess.run(["zsh", "-n", str(zsh_dir / "_hivegen")], check=True)
    assert zsh_complete(zsh_dir, "sta") == {"start", "status"}
    assert zsh_complete(zsh_dir, "meta", "") == {"sync", "update"}
    assert zsh_complete(zsh_dir, "start", "", HIVEGEN_CONFIG=str(hive)) == {"alice", "hm1nd"}
    assert zsh_complete(zsh_dir, "history", "a", HIVEGEN_CONFIG=str(hive)) == {"alice"}
    # The --config typed on the line is the hive asked, before or after the verb.
    assert zsh_complete(zsh_dir, "--config", str(hive), "stop", "") == {"alice", "hm1nd"}
    assert zsh_complete(zsh_dir, "stop", "--config", str(hive), "h") == {"hm1nd"}
    assert zsh_complete(zsh_dir, "dismiss", "", HIVEGEN_CONFIG=str(hive)) == set()
    assert {"--json", "--no-wait"} <= zsh_complete(zsh_dir, "status", "--")


def fish_complete(script: Path, line: str, **extra: str) -> set[str]:
    argv = ["fish", "--no-config", "-c", f"source {script}; complete -C {shlex.quote(line)}"]
    return {offered.split("\t")[0] for offered in shell_lines(argv, **extra)}


def test_fish_completes_verbs_and_the_agents_of_the_hive(tmp_path: Path, hive: Path) -> None:
    needs("fish")
    script = tmp_path / "hivegen.fish"
    script.write_text(completion_script(build_parser(), Shell.FISH))
    assert fish_complete(script, "hivegen sta") == {"start", "status"}
    assert fish_complete(script, "hivegen start ", HIVEGEN_CONFIG=str(hive)) >= {"alice", "hm1nd"}
    assert "bob" not in fish_complete(script, "hivegen start ", HIVEGEN_CONFIG=str(hive))
    assert fish_complete(script, f"hivegen --config {hive} stop h") == {"hm1nd"}


def man_page() -> str:
    out = subprocess.run([str(HIVEGEN), "man"], capture_output=True, text=True, check=True)
    return out.stdout


def test_the_man_page_has_its_sections_and_every_verb() -> None:
    page = man_page()
    assert page.startswith('.TH HIVEGEN 1 "" "hivegen ')
    sections = [line.split(" ", 1)[1] for line in page.splitlines() if line.startswith(".SH ")]
    assert sections[:8] == [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "OPTIONS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
    ]
    listed = [line[5:-1] for line in page.splitlines() if line.startswith('.SS "')]
    assert listed == [escape(path) for path in verb_paths(build_parser())]
    for code in ("0", "1", "2", "3", "130"):
        assert f".TP\n\\fB{code}\\fR\n" in page
    assert "\\fBHIVEGEN_CONFIG\\fR" in page
    assert "\\fI/etc/hivegen/hive.toml\\fR" in page
    # Global options once, under OPTIONS, not under every verb.
    assert page.count("\\fB\\-\\-no\\-wait\\fR") == 1
    # No line a roff request could be read from, other than the generator's own.
    requests = {line.split()[0] for line in page.splitlines() if line.startswith((".", "'"))}
    assert requests <= {".TH", ".SH", ".SS", ".TP", ".PP", ".B", ".nf", ".fi", ".RS", ".RE"} | {
        ".ad",
        ".nh",
    }


def test_roff_escaping() -> None:
    assert escape(".TH evil") == "\\&.TH evil"
    assert escape("'so /etc/passwd") == "\\(aqso /etc/passwd"
    assert escape('a\\b --x "q" `c`') == "a\\eb \\-\\-x \\(dqq\\(dq \\(gac\\(ga"
    assert escape("one\n.two") == "one\n\\&.two"


def test_the_man_page_renders(tmp_path: Path) -> None:
    page = tmp_path / "hivegen.1"
    page.write_text(man_page())
    if shutil.which("groff"):
        out = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", str(page)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        assert out.stderr == ""  # -ww: every warning
        # Without the terminal's overstrike bold and underline, and its hyphen.
        text = re.sub(".\x08", "", out.stdout).replace("\u2010", "-")
        for path in verb_paths(build_parser()):
            assert f"hivegen {path}" in " ".join(text.split()), path
    if shutil.which("man"):
        out = subprocess.run(
            ["man", "-l", str(page)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"},
        )
        assert "EXIT STATUS" in out.stdout
