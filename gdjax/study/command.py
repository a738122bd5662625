"""The installed `gdjax` command's entry point.

Importing the command imports JAX (a second or more on a cold start). A Ctrl-C or SIGTERM in that
window would end in a `KeyboardInterrupt` traceback or a bare kill, because `gdjax.study.cli` has
not yet installed its handlers. This module imports nothing heavy (and neither does `gdjax`'s
`__init__`, whose names load on first use): `main`
installs handlers that end the process at once with the shell's code (130 for SIGINT, 143 for
SIGTERM, 129 for SIGHUP) and one line on stderr, then imports the command, whose own handlers take
over for the rest (issue 12). Nothing has been written at that point, so there is nothing to clean.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["install_startup_handlers", "main"]

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _leave(signum, frame):  # noqa: ARG001 - the signal-handler signature
    try:
        name = signal.Signals(signum).name
        os.write(2, f"\ngdjax: interrupted ({name}) while starting; nothing was run\n".encode())
    except OSError:
        pass
    os._exit(128 + signum)


def install_startup_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP end the process cleanly (exit 128 + signal) until replaced."""
    for s in _SIGNALS:
        signal.signal(s, _leave)


def main() -> int:
    """`gdjax ...`: the start-up handlers, then `gdjax.study.cli.main()` (which leaves by `os._exit`).

    `gdjax run` with plots starts its drawing process here, before JAX is imported, so that the
    process's own imports (JAX's among them: the page's modules import the core) overlap this one's
    (`gdjax.study.drawing`); the command uses it or ends it.
    """
    install_startup_handlers()
    drawer = None
    if _draws(sys.argv[1:]):
        from gdjax.study import drawing

        drawer = drawing.start()
    from gdjax.study.cli import main as command

    return command(drawer=drawer)


def _draws(argv: list[str]) -> bool:
    """Whether `argv` asks for `gdjax run` with its plots and page (argparse's own reading decides
    later; this one only says whether a drawing process is worth starting now)."""
    if argv[:1] != ["run"]:
        return False
    # argparse accepts a long option's unambiguous prefix: --no-p means --no-plots
    return not any(a in ("-h", "--help") or (len(a) > 5 and "--no-plots".startswith(a)) for a in argv[1:])


if __name__ == "__main__":
    sys.exit(main())
