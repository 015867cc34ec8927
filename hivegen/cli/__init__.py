"""Command-line front: parses, calls one library function, prints. Nothing below prints.

The package's modules, by seam: `parser` (with `parser_proposals`, `parser_serve`)
holds the grammar and help texts; `render_verbs`, `hive_verbs`, `agent_verbs`,
`proposal_verbs`, `serve_verbs` and `demo_verb` run the verbs; `common` holds what they
share. Names with a leading underscore are shared between these modules, not an API:
the API is `main` (the console script) and `build_parser`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hivegen.cli.common import (
    JSON_LINES_VERBS,
    PROG,
    Handler,
    _os_error,
    _print_json,
    _report,
    _setup_logging,
    close_live,
    json_errors,
    print_error_document,
)
from hivegen.cli.parser import build_parser, parser_for
from hivegen.errors import ExitCode, HivegenError, Interrupted

# main and build_parser are the API; the helpers are here for the tests that call them.
__all__ = ["_print_json", "_report", "_setup_logging", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = parser_for(words)
    before_dashes = words[: words.index("--")] if "--" in words else words
    with json_errors("--json" in before_dashes):
        args = parser.parse_args(words)
    # For the hive lock's record of who holds it.
    args.argv = words
    _setup_logging(args.verbose)
    handler: Handler = args.handler
    try:
        try:
            return handler(args)
        finally:
            close_live()  # before any message: the status line is erased first
    except HivegenError as error:
        if args.debug:
            import traceback

            traceback.print_exc()
        _report(error)
        if getattr(args, "json", False):
            print_error_document(error, one_line=args.command in JSON_LINES_VERBS)
        return int(error.exit_code)
    except BrokenPipeError:
        # `hivegen render meta | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return int(ExitCode.OK)
    except OSError as os_error:
        # A full disk, a missing permission, an I/O error: one line naming the path.
        # (After BrokenPipeError, which is an OSError too.)
        if args.debug:
            import traceback

            traceback.print_exc()
        reported = _os_error(os_error)
        _report(reported)
        if getattr(args, "json", False):
            print_error_document(reported, one_line=args.command in JSON_LINES_VERBS)
        return int(reported.exit_code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        if getattr(args, "json", False):
            print_error_document(
                Interrupted("interrupted"), one_line=args.command in JSON_LINES_VERBS
            )
        return int(ExitCode.INTERRUPTED)
