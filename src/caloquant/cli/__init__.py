"""The ``caloquant`` command: a thin Typer layer over the library, one module per workflow stage.

Every ``CaloquantError`` (and OS-level I/O failure) becomes a one-line message on stderr and exit code 2;
Ctrl-C exits 130. Commands never print tracebacks for bad input.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import typer

from caloquant import __version__
from caloquant.errors import CaloquantError

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
    print(f"caloquant: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code.

    Typer/Click handle usage errors themselves (exit 2); library errors surface here as one line.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="caloquant", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else fail(str(e.code)))
    except CaloquantError as e:
        return fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return fail(f"{where}{e.strerror or e}")
    return 0


def entrypoint() -> None:
    sys.exit(main())


__all__ = ["app", "fail", "main"]
