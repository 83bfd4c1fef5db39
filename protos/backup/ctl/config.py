"""`backupctl config ...`: the contexts of the config file (see backup.ctl.contexts)."""

from pathlib import Path

import click

from . import render
from .client import Failure
from .contexts import KEYS, Config, ConfigError
from .root import Backupctl, address, cli, examples

PATH_TYPE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _config() -> Config:
    try:
        return Config.load()
    except ConfigError as error:
        raise Failure(str(error)) from None


def _save(config: Config) -> None:
    try:
        config.save()
    except OSError as error:
        raise Failure(f"cannot write {config.path}: {error.strerror}") from None


@cli.group(
    cls=Backupctl,
    epilog=examples(
        "backupctl config set-context prod --server backup.example.net:50051 \\",
        "    --tls-ca pki/ca.pem --tls-cert pki/ann.pem --tls-key pki/ann.key --use",
        "backupctl config set-context lab --server 127.0.0.1:50051",
        "backupctl config use-context lab",
        "backupctl --context prod sessions",
        "backupctl config get-contexts",
    ),
)
def config() -> None:
    """Contexts: a server and the files to reach it, by name, one of them current.

    The file is $BACKUPCTL_CONFIG, else $XDG_CONFIG_HOME/backupctl/config.yaml, else
    ~/.config/backupctl/config.yaml (written 0600). Each setting of a command comes from
    its flag, else its BACKUP_* variable, else the context (--context NAME, else the
    current one), else the default.
    """


@config.command(
    "set-context",
    epilog=examples("backupctl config set-context lab --server 127.0.0.1:50051 --use"),
)
@click.argument("name", metavar="NAME")
@click.option("--server", callback=address, metavar="HOST:PORT", help="The backup server.")
@click.option("--tls-ca", type=PATH_TYPE, metavar="FILE", help="The CA to trust.")
@click.option("--tls-cert", type=PATH_TYPE, metavar="FILE", help="The operator's certificate.")
@click.option("--tls-key", type=PATH_TYPE, metavar="FILE", help="Its key.")
@click.option("--token-file", type=PATH_TYPE, metavar="FILE", help="The API token's file.")
@click.option("--use", is_flag=True, help="Make it the current context too.")
def set_context(name: str, use: bool, **values: str | Path | None) -> None:
    """Create the context NAME, or change the settings given of it (paths are stored
    absolute)."""
    found = _config()
    context = found.contexts.setdefault(name, {})
    for key in KEYS:
        value = values.get(key.replace("-", "_"))
        if value is not None:
            context[key] = str(Path(value).resolve()) if isinstance(value, Path) else value
    if use or not found.current:
        found.current = name
    _save(found)
    current = " (current)" if found.current == name else ""
    click.echo(f"context {name}{current} written to {found.path}")


@config.command("use-context", epilog=examples("backupctl config use-context prod"))
@click.argument("name", metavar="NAME")
def use_context(name: str) -> None:
    """Make NAME the current context."""
    found = _config()
    try:
        found.context(name)
    except ConfigError as error:
        raise Failure(str(error)) from None
    found.current = name
    _save(found)
    click.echo(f"current context: {name}")


@config.command("current-context", epilog=examples("backupctl config current-context"))
def current_context() -> None:
    """Print the current context's name (nothing, exit 1, when there is none)."""
    found = _config()
    if not found.current:
        raise Failure(f"no current context in {found.path}")
    click.echo(found.current)


@config.command("get-contexts", epilog=examples("backupctl config get-contexts"))
def get_contexts() -> None:
    """List the contexts; the current one is marked with *."""
    found = _config()
    shown = render.table(("", "id"), ("name", "id"), ("server", "id"), ("credentials", "text"))
    for name, values in found.contexts.items():
        credentials = ", ".join(key for key in KEYS[1:] if key in values) or "none (plaintext)"
        marker = "*" if name == found.current else ""
        shown.add_row(marker, name, values.get("server", "(default)"), credentials)
    render.console().print(shown)


@config.command("delete-context", epilog=examples("backupctl config delete-context lab"))
@click.argument("name", metavar="NAME")
def delete_context(name: str) -> None:
    """Remove the context NAME (the current one too: then none is current)."""
    found = _config()
    try:
        found.context(name)
    except ConfigError as error:
        raise Failure(str(error)) from None
    del found.contexts[name]
    if found.current == name:
        found.current = ""
    _save(found)
    click.echo(f"deleted context {name}")
