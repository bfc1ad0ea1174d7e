"""The typer app, its consoles and its error handling, and the options commands share.

Everything printed goes through `SafeConsole`: markup off (a path like `runs[final]` prints as
typed) and control characters shown as escapes, never sent raw to the terminal.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import typer.core
from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from bloodcells.errors import BloodcellsError, DataWarning

try:  # typer 0.2x carries its own copy of click; older typers use click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

LOG_WIDTH = 160
PROGRESS_AFTER_S = 1.0  # a decode bar only for decodes that last: a cache hit shows nothing
# C0 and C1 control characters except tab and newline: shown as \xNN instead of obeyed.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (9, 10)}


class SafeConsole(Console):
    """A rich Console that never reads markup in strings and escapes control characters."""

    def __init__(self, **kwargs) -> None:
        super().__init__(markup=False, highlight=False, soft_wrap=True, **kwargs)

    def render_str(self, text: str, **kwargs) -> Text:
        return super().render_str(text.translate(_CONTROLS), **kwargs)

    def _size(self) -> ConsoleDimensions:
        """The terminal's size; in a log or a pipe at least LOG_WIDTH columns, so that
        tables keep one line per row instead of wrapping at 80."""
        size = Console.size.fget(self)
        if self.is_terminal or self._width is not None:
            return size
        return ConsoleDimensions(max(size.width, LOG_WIDTH), size.height)

    size = property(_size, Console.size.fset)


out = SafeConsole()
err = SafeConsole(stderr=True)


def bold(text: str) -> Text:
    return Text(text.translate(_CONTROLS), style="bold")


class FriendlyGroup(typer.core.TyperGroup):
    """Input errors become one line on stderr and exit code 2; tracebacks only with --debug.

    Usage errors (an unknown option, a missing argument, a bad value) are input errors too: one
    line, not typer's box, whether they come from the top level or from a command.
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except ClickException as exc:
            _usage_error(exc)

    def invoke(self, ctx: typer.Context):
        try:
            with warnings_on_stderr():
                return super().invoke(ctx)
        except ClickException as exc:
            _usage_error(exc)
        except (BloodcellsError, OSError) as exc:
            if ctx.meta.get("debug"):
                raise
            print_error(one_line(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            if ctx.meta.get("debug"):
                raise
            err.print("interrupted")
            raise typer.Exit(130) from None


def _usage_error(exc: ClickException) -> NoReturn:
    """Print a click/typer usage error as one line and exit with code 2."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a group called alone: its help, as typer does
        raise exc
    message = exc.format_message().replace("\n", " ").strip().rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f"; see {ctx.command_path} --help"
    print_error(message)
    raise typer.Exit(2) from None


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr, control characters escaped."""
    err.print(Text.assemble(("error: ", "bold red"), message.translate(_CONTROLS)))


def one_line(exc: Exception) -> str:
    """An error as one line; an OSError names its file and says what the system said."""
    if isinstance(exc, OSError) and not isinstance(exc, BloodcellsError):
        from bloodcells.errors import os_reason

        reason = os_reason(exc)
        return f"{exc.filename}: {reason}" if exc.filename else reason
    return str(exc).replace("\n", " ")


app = typer.Typer(
    cls=FriendlyGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Classify white blood cells from small microscopy patches (the CNN lab as software).",
)
data_app = typer.Typer(
    no_args_is_help=True,
    help="Bring data in, split it, check it, look at it, and make the demo set.",
)
app.add_typer(data_app, name="data")


@app.callback()
def _options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
) -> None:
    ctx.meta["debug"] = debug


@contextlib.contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """Warnings shown as one `warning: ...` line on stderr while a command runs; the
    previous warnings.showwarning is back afterwards (the CLI may run inside a program)."""
    before = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = before


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    label = "warning: " if issubclass(category, DataWarning) else f"{category.__name__}: "
    err.print(Text.assemble((label, "yellow"), str(message).translate(_CONTROLS)))


# Options shared by several commands, declared once.
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="Dataset root: ROOT/train/<class>, ROOT/test/<class>."),
]
RunDataOpt = Annotated[
    Path | None, typer.Option("--data", "-d", help="Use ROOT/test instead of the run's data.")
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N (default: auto).")]
SizeOpt = Annotated[int, typer.Option(help="Resize images to SIZE×SIZE.")]
RgbOpt = Annotated[bool, typer.Option("--rgb", help="Read as RGB instead of grayscale.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for picking the images.")]
RunArg = Annotated[Path, typer.Argument(help="A run folder made by bloodcells train.")]
TtaOpt = Annotated[
    bool, typer.Option("--tta", help="Average the probabilities over the 8 rotations/flips.")
]
StainOpt = Annotated[
    str,
    typer.Option(
        help="giemsa (stained smears), brightfield (unstained tiles) or auto (decided per image)."
    ),
]
PixelSizeOpt = Annotated[
    float | None,
    typer.Option(
        help="Micrometres per pixel, if known; else the scale is the input's median cell size."
    ),
]
RecipeOpt = Annotated[
    str | None,
    typer.Option(help="lab (the default: the lab's settings), fast or robust (see train --help)."),
]


def figure_output(default: str) -> object:
    return typer.Option(
        "--output", "-o", help=f"Image file (.png, .pdf, .svg) or a folder for {default}."
    )


def main() -> None:
    """Console-script entry point."""
    app()


class DecodeBar:
    """A `progress(done, total)` callback for the data layer: a bar on a terminal's stderr
    that appears once decoding has taken PROGRESS_AFTER_S and goes when it is done."""

    def __init__(self, description: str = "decoding images") -> None:
        self.description = description
        self._start = 0.0
        self._bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if done == 0:
            self._start = time.monotonic()
        if self._bar is None and time.monotonic() - self._start > PROGRESS_AFTER_S:
            columns = (TextColumn(self.description), BarColumn(), MofNCompleteColumn())
            self._bar = Progress(*columns, console=err, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=total)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            if done >= total:
                self._bar.stop()
                self._bar = None


def decode_progress() -> DecodeBar | None:
    """The decode bar where stderr is a terminal; None (no output at all) in a pipe or a log."""
    return DecodeBar() if err.is_terminal else None


def images_bar() -> Progress:
    """A transient progress bar of images on a terminal's stderr: what, bar, done/total,
    images/s and time left; add a task per stage (disabled in a pipe or a log)."""
    from rich.progress import ProgressColumn, TimeRemainingColumn

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} images/s" if speed else "")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate())
    return Progress(
        *columns, TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal
    )
