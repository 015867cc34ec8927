"""Writes corpus.json: hostile inputs for tests/test_hostile.py.

Kept as data (the JSON is committed); re-run this script to regenerate it after adding
cases here: `python tests/hostile/make_corpus.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

BAD_NAMES = [
    "",
    " ",
    "Alice",
    "ALICE",
    "1alice",
    "-alice",
    "--help",
    "-",
    "_alice",
    "alice_",
    "a.b",
    "a/b",
    "/",
    "..",
    ".",
    "../x",
    "./x",
    "a b",
    "a\tb",
    "a\nb",
    "a\rb",
    "alice\n",
    "\nalice",
    "a\x00b",
    "a\x1bb",
    "$(id)",
    "`id`",
    "a;b",
    "a|b",
    "a&b",
    "a>b",
    "a<b",
    "'a'",
    '"a"',
    "a'b",
    'a"b',
    "a\\b",
    "a$b",
    "${x}",
    "a*",
    "a?",
    "a[1]",
    "a{b}",
    "a=b",
    "a:b",
    "a,b",
    "a@b",
    "a#b",
    "a%b",
    "a+b",
    "abcdefghij",
    "abcdefghijklmnop",
    "x" * 100,
    "\uff41lice",
    "\u0430lice",
    "al\u0456ce",
    "alic\u00e9",
    "\u00e5",
    "a\u200bb",
    "a\u00adb",
    "\U0001f41d",
    "alice/../../etc",
    "~root",
    "*",
    "a\u2028b",
]
GOOD_NAMES = [
    "a",
    "alice",
    "bob",
    "coder",
    "x1",
    "a-b",
    "a--b",
    "abc-",
    "z9",
    "abcdefghi",
    "h-x",
    "h-alice",
    "h1",
    "hm1nd",
    "a0000000b",
    "q",
]
BAD_MANAGERS = [
    "",
    "Boss",
    "h-boss",
    "boss man",
    "b/oss",
    "boss\n",
    "abcdefghijkl",
    "1boss",
    "-boss",
    "bo$s",
    "b\u00f6ss",
    "..",
    "boss;",
    "boss'",
    "\x00",
]
GOOD_MANAGERS = ["boss", "overseer-01", "hm1nd", "m", "abcdefghijk"]
LEGAL_STRINGS = [
    'she/her "mostly"',
    "back\\slash",
    "${pkgs.evil}",
    "$${double}",
    "''${y}",
    "line1\nline2",
    "tab\there",
    "cr\rlf",
    "ñandú ✓ 🐝",
    "}; evil = true; {",
    '" + builtins.throw "x',
    "#not a comment",
    "/* no */",
    "$",
    "a$",
    "\\",
    "\\\\${x}",
    "''",
    "' '",
    "{ }",
    "( )",
    "rec { a = 1; }",
    "let x = 1; in x",
    "<nixpkgs>",
    "./relative",
    "https://x?y=${z}",
    "\u202eright-to-left",
    "x" * 500,
]
BAD_STRINGS = [
    "a\x00b",
    "\x1b[31mred",
    "bell\x07",
    "\x7f",
    "nul\x00",
    "vt\x0bx",
    "ff\x0cx",
    "\x01",
    "c1\x85",
    "c1\x9b[0m",
    "esc\x1b",
    "\x08backspace",
]
BAD_LIMITS = {
    "memory_max": [
        "2G; rm -rf /",
        "-1",
        "1e9",
        "0",
        "2g",
        "2 G",
        "2GB",
        "2.5G",
        "",
        "G",
        "101%",
        "0%",
        "infinity ",
        "INF",
        "2G\n",
        "$(id)",
        "1P",
        "99999999999999999999",
    ],
    "cpu_quota": [
        "50",
        "0%",
        "-5%",
        "5.5%",
        "50 %",
        "%",
        "",
        "50%%",
        "1000000%",
        "x%",
        "50%\nMemoryMax=0",
    ],
}
GOOD_LIMITS = {
    "memory_max": ["1", "512M", "2G", "4T", "100%", "1%", "infinity", "1024K"],
    "cpu_quota": ["1%", "50%", "100%", "250%", "999999%"],
}
BAD_PATHS = [
    "relative",
    "",
    "/with space",
    "/a:b",
    "/a/../b",
    "/a/./b",
    "/new\nline",
    "/tab\tx",
    "/$(id)",
    "/a;b",
    "/a'b",
    '/a"b',
    "/a\\b",
    "/\u00e9",
    "/a*b",
    "~/x",
    "/a,b",
    "/a=b",
    "/a\x00b",
]
GOOD_PATHS = ["/srv/hive", "/var/lib/hyperhive/", "/srv//double", "/a-b_c.d+e", "/x"]
BAD_PORTS = ["8000", 0, -1, 65536, 1.5, True, [8000], {"a": 1}, 10**10]
BAD_REVS = [
    "",
    "abc",
    "abcdef",
    "ABCDEF1",
    # (HEAD and main are names propose takes: the tip of main, read by hivegen.)
    "refs/heads/main",
    "--upload-pack=touch x",
    "-1234567",
    "--output=/tmp/x",
    "1234567:refs/tags/x",
    "+1234567:refs/heads/main",
    "1234567^",
    "1234567~1",
    "1234567^{tree}",
    "1234567..abcdef0",
    "@{-1}",
    "a" * 41,
    " 1234567",
    "1234567 ",
    "1234567\n",
    "12345g7",
    "\uff21\uff22\uff23\uff24\uff25\uff261",
    "1234567;id",
    "$(id)",
    "`id`",
    "FETCH_HEAD",
    "ORIG_HEAD",
    "stash@{0}",
    ":/message",
]
BAD_NOTES = [
    "bell\x07",
    "nul\x00x",
    "\x1b[2J",
    "del\x7f",
    "c1\x85",
    "x" * 10_001,
    "\x08",
    "vt\x0b",
    "ff\x0c",
    "\x1b]0;title\x07",
]
GOOD_NOTES = ['no "way"', "multi\nline", "${x} $(id) `id`", "ñandú 🐝", ""]
BAD_IDS = ["abc", "-x", "1e3", "0x10", "", " ", "1;rm", "1.0", "one", "--", "1 2", "½"]
MISSING_IDS = ["0", "99999", "-1"]


# Flake inputs a manager's flake.nix may bring (Security II). With --allow-flake-inputs
# the legal ones are accepted; one that reads the host's filesystem never is. Without
# the flag every one of them is refused. "attrs" cases are Nix attribute sets.
BAD_FLAKE_INPUTS = [
    "path:/",
    "path:/etc",
    "path:/var/lib/hyperhive/credentials",
    "path:.",
    "path:./sub",
    "PATH:/etc",
    "/etc",
    "/",
    "./secrets",
    "../../credentials",
    "~/.ssh",
    "file:///etc/shadow",
    "file:/etc/shadow",
    "git+file:///root/.password-store",
    "git+file:/var/lib/hyperhive/applied/bob",
    "git+FILE:///x",
    "hg+file:///srv/repo",
    "tarball+file:///tmp/x.tar.gz",
]
BAD_FLAKE_INPUT_ATTRS = [
    '{ type = "path"; path = "/etc"; }',
    '{ type = "git"; url = "file:///root/repo"; }',
    '{ type = "tarball"; url = "file:///tmp/x.tgz"; }',
    '{ path = "/"; }',
    # Not readable without evaluating far more than the inputs: refused, not guessed.
    '(throw "no")',
    "(let f = x: f x; in f 1)",
    "(builtins.readFile /etc/hostname)",
]
GOOD_FLAKE_INPUTS = [
    "github:NixOS/nixpkgs/nixos-24.05",
    "github:example/tools?dir=sub",
    "gitlab:group/project",
    "sourcehut:~user/repo",
    "git+https://example.org/repo.git?ref=main",
    "git+ssh://git@example.org/repo.git",
    "https://example.org/archive.tar.gz",
    "flake:nixpkgs",
]
GOOD_FLAKE_INPUT_ATTRS = [
    '{ type = "file"; url = "https://example.org/x"; }',
    '{ type = "github"; owner = "NixOS"; repo = "nixpkgs"; }',
    '{ url = "github:example/tools"; flake = false; }',
    '{ follows = "hyperhive"; }',
]
# Commit subjects that try to drive the operator's terminal: shown escaped on a TTY,
# kept exactly in --json.
HOSTILE_SUBJECTS = [
    "\x1b]52;c;aGVsbG8=\x07clipboard",
    "\x1b[2J\x1b[Hcleared",
    "fine\rFORGED",
    "\u202eevil\u202c",
    "\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\",
    "\x9b31mC1 CSI",
    "\u2066isolate\u2069 \u200fmark",
    "bell\x07 and del\x7f",
]


def cases() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    out += [{"kind": "agent-name", "value": v, "legal": False} for v in BAD_NAMES]
    out += [{"kind": "agent-name", "value": v, "legal": True} for v in GOOD_NAMES]
    out += [
        {"kind": "config", "table": "hive", "key": "manager", "value": v, "legal": False}
        for v in BAD_MANAGERS
    ]
    out += [
        {"kind": "config", "table": "hive", "key": "manager", "value": v, "legal": True}
        for v in GOOD_MANAGERS
    ]
    for key in ("operator_pronouns", "committer_name"):
        # A git identity cannot carry '<' or '>': refused for committer_name only.
        def legal(value: str, key: str = key) -> bool:
            return key != "committer_name" or not ("<" in value or ">" in value)

        out += [
            {"kind": "config", "table": "hive", "key": key, "value": v, "legal": legal(v)}
            for v in LEGAL_STRINGS
        ]
        out += [
            {"kind": "config", "table": "hive", "key": key, "value": v, "legal": False}
            for v in BAD_STRINGS
        ]
    for key, values in BAD_LIMITS.items():
        for table in ("limits", "agents.alice"):
            out += [
                {"kind": "config", "table": table, "key": key, "value": v, "legal": False}
                for v in values
            ]
    for key, values in GOOD_LIMITS.items():
        out += [
            {"kind": "config", "table": "limits", "key": key, "value": v, "legal": True}
            for v in values
        ]
    for key in ("state_root", "runtime_root"):
        table = "hive" if key == "state_root" else "host"
        out += [
            {"kind": "config", "table": table, "key": key, "value": v, "legal": False}
            for v in BAD_PATHS
        ]
        out += [
            {"kind": "config", "table": table, "key": key, "value": v, "legal": True}
            for v in GOOD_PATHS
        ]
    out += [
        {"kind": "config", "table": "hive", "key": "dashboard_port", "value": v, "legal": False}
        for v in BAD_PORTS
    ]
    out += [{"kind": "revision", "value": v, "legal": False} for v in BAD_REVS]
    out += [{"kind": "note", "value": v, "legal": False} for v in BAD_NOTES]
    out += [{"kind": "note", "value": v, "legal": True} for v in GOOD_NOTES]
    out += [{"kind": "id", "value": v, "legal": False} for v in BAD_IDS + MISSING_IDS]
    out += [{"kind": "flake-input", "value": v, "legal": False} for v in BAD_FLAKE_INPUTS]
    out += [{"kind": "flake-input", "value": v, "legal": True} for v in GOOD_FLAKE_INPUTS]
    out += [
        {"kind": "flake-input-attrs", "value": v, "legal": False} for v in BAD_FLAKE_INPUT_ATTRS
    ]
    out += [
        {"kind": "flake-input-attrs", "value": v, "legal": True} for v in GOOD_FLAKE_INPUT_ATTRS
    ]
    out += [{"kind": "commit-subject", "value": v, "legal": True} for v in HOSTILE_SUBJECTS]
    return out


if __name__ == "__main__":
    target = Path(__file__).with_name("corpus.json")
    data = cases()
    target.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n")
    print(f"{len(data)} cases -> {target}")
