"""The `edgekit` command. Thin: parses, calls the API, prints. Sub-commands live in their own
modules and are imported only when invoked, so `edgekit --help` answers fast."""

from __future__ import annotations

import errno
import importlib
import importlib.util
import sys

import click

from edgekit import __version__
from edgekit.errors import EdgekitError

# name -> "module:attribute"; one list of commands, the help text comes from each command.
COMMANDS: dict[str, str] = {
    "zoo": "edgekit.cli.zoo:zoo",
    "inspect": "edgekit.cli.inspect:inspect",
    "calib": "edgekit.cli.calib:calib",
    "export": "edgekit.cli.export:export",
    "bench": "edgekit.cli.bench:bench",
    "profile": "edgekit.cli.profile:profile",
    "compress": "edgekit.cli.compress:compress",
    "validate": "edgekit.cli.validate:validate",
    "devices": "edgekit.cli.validate:devices",
    "results": "edgekit.cli.results:results",
    "report": "edgekit.cli.results:report",
    "run": "edgekit.cli.run:run",
    "demo": "edgekit.cli.demo:demo",
    "optimize": "edgekit.cli.optimize:optimize",
}
SHORT_HELP: dict[str, str] = {
    "zoo": "Reference models: list and train them on Fashion-MNIST.",
    "inspect": "What edgekit will assume and do with a model, before anything runs.",
    "calib": "Build calibration sets.",
    "export": "Export a model to ONNX, OpenVINO or TensorRT.",
    "bench": "Benchmark an artifact: latency and accuracy on this machine.",
    "profile": "Per-layer time of an artifact on a device (layer, module, precision, ms).",
    "compress": "Prune, substitute depthwise-separable convs, distill and quantize a model.",
    "validate": "Validate every artifact of an output folder on a device profile.",
    "devices": "List device profiles and which of their runtimes work here.",
    "results": "Query the results store.",
    "report": "Write the HTML/Markdown report of a results store.",
    "run": "Run a recipe: compress, export, validate, report.",
    "optimize": "Search the fastest artifact within the accuracy budget, measured on each device.",
    "demo": "Run the demo recipes (LeNet-5, CNN+GRU) on this CPU and write the HTML report.",
}


# OSErrors that mean "edgekit cannot write there", reported as bad input (exit 2).
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
              errno.ENOTDIR, errno.EISDIR}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _available(name):
            return None
        module_name, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if not rows:
            return
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _available(name: str) -> bool:
    module_name = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: take a trained PyTorch image model to an edge device, small and fast,
    and measure the truth about the result."""


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, standalone_mode=False)
    except EdgekitError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:  # a folder that cannot be written, a full disk: the user's to fix
        if exc.errno not in UNWRITABLE:
            raise
        where = str(exc.filename or "a file")
        if where.endswith(".part"):  # edgekit's temp file: name the folder it was written in
            where = "in " + where.rsplit("/", 1)[0]
        click.secho(f"error: cannot write {where}: {exc.strerror}", fg="red", err=True)
        click.echo("  hint: choose an output folder you can write to (and check free space)",
                   err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
