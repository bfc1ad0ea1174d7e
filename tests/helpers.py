"""Helpers the CLI tests share: run the app as a user would, and check a one-line error."""

from __future__ import annotations

from typer.testing import CliRunner

from bloodcells.cli import app

runner = CliRunner()


def invoke(*args):
    """`bloodcells ARGS...` in-process; every argument as text, as a shell passes it."""
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, message: str) -> None:
    """The command failed as a usage error (exit 2) with `message`, in one line, no traceback."""
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
