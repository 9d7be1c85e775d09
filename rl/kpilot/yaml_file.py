"""Reading a YAML settings file, with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import yaml

from kpilot.errors import ConfigError


def read_yaml(path: str | Path):
    """The parsed document (None for an empty file); ConfigError on a missing or malformed file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError("no such config file", path=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", path=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text file (YAML is UTF-8 text)", path=str(p)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML ({getattr(exc, 'problem', None) or exc})", path=str(p),
                          line=mark.line + 1 if mark else None) from None
