"""The `kpilot` command line. Commands are thin: parse options, call the library, render.

Input errors (KpilotError) are rendered here, once, as a single line with exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from kpilot.errors import KpilotError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Learn Knative autoscaling targets from real request traces.")
trace_app = typer.Typer(no_args_is_help=True, help="Read and describe request traces.")
app.add_typer(trace_app, name="trace")
operator_app = typer.Typer(no_args_is_help=True, help="Run the kpilot operator.")
app.add_typer(operator_app, name="operator")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@trace_app.command("inspect")
def trace_inspect(
    path: str = typer.Argument(..., help="Trace file (format auto-detected from its header), "
                               "PATH?key=value&... with reader options, or synthetic:NAME[:key=value,...]."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force a format (see `kpilot trace formats`)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
):
    """Print rows, span, rates, burstiness and duration percentiles of a trace."""
    from kpilot.traces.inspect import inspect_command

    inspect_command(path, fmt, json_out)


@operator_app.command("run")
def operator_run(
    namespace: Optional[list[str]] = typer.Option(None, "--namespace", "-n",
                                                  help="Watch only these namespaces (default: all)."),
    standalone: bool = typer.Option(True, help="Run without Kopf peering (development)."),
):
    """Run the operator outside a cluster with the usual kubeconfig, for development."""
    from kpilot_operator.main import run

    run(namespaces=namespace, standalone=standalone)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app, turning input errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except KpilotError as exc:
        err_console.print(f"kpilot: error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors (unknown option, bad value) come from the CLI parser Typer bundles;
        # they carry format_message() and exit_code 2. Render them as one line too.
        if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2:
            ctx = getattr(exc, "ctx", None)
            cmd = ctx.command_path if ctx is not None else "kpilot"
            err_console.print(f"{cmd}: error: {exc.format_message()}", markup=False)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
