"""Reading a YAML settings file, with errors that name the file and line."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kpilot.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping is an error: PyYAML
    keeps the last, so `total_timesteps` written twice would silently mean the second."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue            # `<<: *anchor`: its keys are defaults the mapping's own may override
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue            # an unhashable key: the base class says what is wrong with it
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path):
    """The parsed document (None for an empty file); ConfigError on a missing or malformed file."""
    p = Path(path)
    if p.exists() and not p.is_dir() and not p.is_file():     # a FIFO without a writer would hang
        raise ConfigError("not a regular file (a pipe or device): save the config to a file", path=str(p))
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError("no such config file", path=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", path=str(p)) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text file (YAML is UTF-8 text)", path=str(p)) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML ({getattr(exc, 'problem', None) or exc})", path=str(p),
                          line=mark.line + 1 if mark else None) from None
    except RecursionError:      # PyYAML recurses once per level: no settings file nests this deep
        raise ConfigError("invalid YAML (nested too deeply)", path=str(p)) from None


def number_as_text_hint(value) -> str:
    """Where a number was expected and YAML 1.1 read one as text (its floats need a dot and a
    signed exponent: 1e-3 and 2.5e3 are text, 1.0e-3 and 2.5e+3 numbers), say so and how to
    write it; "" for anything else."""
    match = re.fullmatch(r"([-+]?)(\d*)(?:\.(\d*))?[eE]([-+]?)(\d+)", value.strip()) if isinstance(value, str) else None
    if match is None or not (match[2] or match[3]):
        return ""
    sign, whole, fraction, exp_sign, exponent = match.groups()
    written = f"{sign}{whole or 0}.{fraction or 0}e{exp_sign or '+'}{exponent}"
    what = "a number without a dot" if fraction is None else "an exponent without a sign"
    return f" (YAML reads {what}, such as {value}, as text: write {written})"
