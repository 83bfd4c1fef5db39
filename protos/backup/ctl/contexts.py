"""backupctl's config file: named contexts (a server, its TLS files, a token file), one
of them current, as kubectl's kubeconfig does.

    $BACKUPCTL_CONFIG, else $XDG_CONFIG_HOME/backupctl/config.yaml, else
    ~/.config/backupctl/config.yaml:

    current-context: prod
    contexts:
      prod:
        server: backup.example.net:50051
        tls-ca: /etc/backup/pki/ca.pem
        tls-cert: /home/ann/pki/ann.pem
        tls-key: /home/ann/pki/ann.key
      lab:
        server: 127.0.0.1:50051

A command uses, for each setting, its flag, else its BACKUP_* variable, else the current
context's (or --context NAME's), else the built-in default. Relative paths in the file
are relative to the file, so a config can travel with its certificates.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_VARIABLE = "BACKUPCTL_CONFIG"
# The context's keys: what `config set-context` takes, as the flags are spelled.
KEYS = ("server", "tls-ca", "tls-cert", "tls-key", "token-file")
PATH_KEYS = frozenset({"tls-ca", "tls-cert", "tls-key", "token-file"})


class ConfigError(Exception):
    """The config file cannot be used as asked; the message is the one line to show."""


def _write_private(path: Path, text: str) -> None:
    """The whole file or nothing (written aside, then renamed), readable by its owner only:
    it says where the operator's keys and token are."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def config_path() -> Path:
    """Where the config file is (whether or not it exists)."""
    override = os.environ.get(CONFIG_VARIABLE)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "backupctl" / "config.yaml"


@dataclass
class Config:
    """The whole file: the contexts by name and the current one's name ('' if none)."""

    path: Path
    current: str
    contexts: dict[str, dict[str, str]]

    @classmethod
    def load(cls, path: Path | None = None) -> "Config":
        path = path or config_path()
        try:
            data: Any = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            return cls(path, "", {})
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text file") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
        contexts = data.get("contexts", {}) if isinstance(data, dict) else None
        if not isinstance(contexts, dict) or not all(
            isinstance(value, dict) for value in contexts.values()
        ):
            raise ConfigError(f"{path}: 'contexts' must map each name to its settings")
        for name, settings in contexts.items():
            unknown = sorted(set(settings) - set(KEYS))
            if unknown:
                raise ConfigError(
                    f"{path}: context {name!r} has unknown keys {', '.join(unknown)} "
                    f"(known: {', '.join(KEYS)})"
                )
        current = data.get("current-context", "") or ""
        return cls(path, str(current), {str(k): dict(v) for k, v in contexts.items()})

    def save(self) -> None:
        document = {"current-context": self.current, "contexts": self.contexts}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(self.path, yaml.safe_dump(document, sort_keys=False))

    def context(self, name: str) -> dict[str, str]:
        """The named context's settings, paths resolved against the file's directory."""
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none yet: backupctl config set-context"
            raise ConfigError(f"no context {name!r} in {self.path} (contexts: {known})")
        resolved = {}
        for key, value in self.contexts[name].items():
            if key in PATH_KEYS:
                value = str(self.path.parent / Path(value).expanduser())
            resolved[key] = str(value)
        return resolved
