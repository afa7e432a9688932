"""Known errors (bad config, dataset, checkpoint, run folder, disk) reach the user as one line on stderr and exit
code 2; the traceback only with --debug (or OFFLINE_TO_ONLINE_DEBUG=1).

    if __name__ == "__main__":
        cli(main)
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence


class RunError(Exception):
    """Base of every error whose message tells the user what was wrong and how to fix it."""


def yaml_problem(path, exc: Exception) -> str:
    """One line for a YAML file that does not parse: the file, the line and column, and what the parser saw."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: not valid YAML ({problem}); fix that line"


def cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("OFFLINE_TO_ONLINE_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:  # the rest of the run reads it too (wandb's banners are shown only then)
        os.environ["OFFLINE_TO_ONLINE_DEBUG"] = "1"
    try:
        main(argv)
    except (RunError, OSError, FloatingPointError) as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
            message = f"{message}: {exc.filename}"
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(2)
