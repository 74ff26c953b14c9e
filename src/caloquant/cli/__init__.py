"""The ``caloquant`` command: a thin Typer layer over the library, one module per workflow stage.

Every usage error, ``CaloquantError`` and OS-level I/O failure becomes a one-line message on stderr and exit
code 2; Ctrl-C exits 130, SIGTERM 143, each after the cleanup. Commands never print tracebacks for bad input.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from caloquant import __version__
from caloquant.errors import CaloquantError, Interrupted, stopped_by

app = typer.Typer(
    name="caloquant",
    help="Generative calorimeter fast simulation: simulate, train, quantize (judged by physics), generate, "
    "validate, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Stage modules, in data-flow order; each defines ``register(app)``.
_COMMAND_MODULES = [
    "caloquant.cli.simulate",
    "caloquant.cli.calibrate",
    "caloquant.cli.train",
    "caloquant.cli.validate",
    "caloquant.cli.quantize",
    "caloquant.cli.generate",
    "caloquant.cli.bench",
    "caloquant.cli.demo",
]
for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"caloquant {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """caloquant: generative fast simulation for calorimeters, quantized where physics allows."""


def fail(message: str, code: int = 2) -> int:
    """Print a one-line error and return the exit code."""
    print(f"caloquant: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted("interrupted" if signum == signal.SIGINT else "terminated", signum)


@contextlib.contextmanager
def _signals_as_errors() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted``, so that every cleanup runs and the exit says why (130/143)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code.

    Usage errors, library errors and I/O failures surface here as one line on stderr with exit code 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with _signals_as_errors():
            code = app(args=args, prog_name="caloquant", standalone_mode=False)
    except NoArgsIsHelpError as e:
        e.show()
        return e.exit_code
    except UsageError as e:
        where = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
        return fail(f"{e.format_message()}{where}", e.exit_code)
    except ClickException as e:
        return fail(e.format_message(), e.exit_code)
    except typer.Abort:
        return fail("aborted", 1)
    except SystemExit as e:  # typer's own exits (--help, --version) are returned: this is code inside a command
        return fail(f"stopped: code run by the command {stopped_by(e)}",
                    e.code if isinstance(e.code, int) and e.code != 0 else 2)
    except CaloquantError as e:
        return fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return fail(f"{where}{e.strerror or e}")
    if code == 130:  # typer turns a bare KeyboardInterrupt raised inside a command into 130, silently
        return fail("interrupted (KeyboardInterrupt raised inside the command)", 130)
    return code if isinstance(code, int) else 0


def entrypoint() -> None:
    sys.exit(main())


__all__ = ["app", "fail", "main"]
