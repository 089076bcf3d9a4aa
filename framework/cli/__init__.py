"""The ``aicc`` command: ``compile``, ``run``, ``quantize``, ``passes``, ``backends``, ``ops``.

User errors print one line, ``error: FILE: FIELD: what is wrong (hint)``, and exit 2; internal
errors exit 1; ``--debug`` shows the traceback. A write that fails for want of space (a full disk, a
quota, ``ulimit -f``: SIGXFSZ is ignored so the write fails rather than the process dying) is a
one-line error with exit 2 too, wherever it happens.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
import traceback
from collections.abc import Sequence

from ..errors import VOCABULARY, AiccError, UsageError

__all__ = ["main"]

_USAGE = """usage: aicc COMMAND [flags]

commands:
  compile   compile an ONNX model into a program container (qaic-compile flags accepted)
  run       run a compiled container on raw/.npy inputs or input lists
  quantize  quantize an ONNX model to QDQ ONNX (QNN quantizer flags accepted)
  passes    list the registered passes with their options
  backends  list the registered backends with their options
  options   list the compile options: Python names (aicc.compile, --config files) and flags
  ops       list the operators each backend runs (opsets, element types) and lowering passes

'aicc COMMAND --help' describes a command's flags. Add --debug to see tracebacks.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``aicc`` command; errors name options as the user typed them (the flags)."""
    token = VOCABULARY.set(_FlagSpellings())
    try:
        return _main(argv)
    finally:
        VOCABULARY.reset(token)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    verbose = "-v" in argv or "--verbose" in argv
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose
                        else logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    if hasattr(signal, "SIGXFSZ"):  # past ulimit -f a write fails (EFBIG) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(_USAGE)
            return 0
        command, rest = argv[0], argv[1:]
        if command == "compile":
            from .compile_cmd import run_compile
            return run_compile(rest)
        if command == "run":
            from .run_cmd import run_run
            return run_run(rest)
        if command in ("passes", "backends", "options"):
            from .list_cmd import run_list
            return run_list(command, rest)
        if command == "ops":
            from .ops_cmd import run_ops
            return run_ops(rest)
        if command == "quantize":
            from .quantize_cmd import run_quantize
            return run_quantize(rest)
        raise UsageError(f"unknown command '{command}'", where="aicc",
                         hint="commands: compile, run, quantize, passes, backends, options, ops")
    except AiccError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno not in _SPACE_ERRNOS:
            return _internal(e, debug)
        if debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}cannot write: {e.strerror} (free some space, or write elsewhere)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: a bug in aicc or a plugin
        return _internal(e, debug)


class _FlagSpellings(dict):
    """Compile options as ``aicc compile`` flags: what any command's errors call an option the
    user did not type (an option typed is added by the command with its spelling)."""

    def __missing__(self, key: str) -> str:
        from ..plugins import load_registries
        try:
            table = load_registries().options
        except AiccError:
            raise KeyError(key) from None
        self.update({k: o.flags[0] for k, o in table.options.items()
                     if o.flags and k not in self})
        if key not in self:
            raise KeyError(key)
        return self[key]


_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _internal(e: Exception, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
          file=sys.stderr)
    return 1
