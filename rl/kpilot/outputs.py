"""Writing what a command outputs: never over what it reads, never a half-written file.

Each output goes to a temporary file in its own folder and is moved into place once complete; a
symbolic link is written through to its target, and a replaced file keeps its mode.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from kpilot.errors import ConfigError


def output_file(path: Path, option: str, reading: dict | None = None) -> Path:
    """The file an output option will replace: a symbolic link's target (written through), or
    the path; one error line for what must not be replaced: a folder, a device, pipe or socket
    (a replacement would turn it into a plain file), a link that loops, a missing folder, or
    what the command reads its input from (`reading`: path -> what it is, e.g. "the trace"; a
    folder's files, e.g. a policy artifact's, are all of it)."""
    path = Path(path)
    try:
        os.stat(path)                 # follows links: a loop is ELOOP, a dangling link a new file
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{str(path)!r} is a symbolic link that loops", option=option) from None
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        what = "is a file, not a folder" if target.parent.exists() else "does not exist"
        raise ConfigError(f"folder {str(target.parent)!r} {what}", option=option)
    if target.is_dir():
        raise ConfigError(f"{str(path)!r} is a folder, not a file", option=option)
    if target.exists() and not target.is_file():
        raise ConfigError(f"{str(path)!r} is not a regular file (a device, pipe or socket)", option=option)
    for source, what in (reading or {}).items():
        source = Path(source)
        if not (target.exists() and source.exists()):
            continue
        if source.is_dir() and target.is_relative_to(os.path.realpath(source)):
            raise ConfigError(f"{str(path)!r} is part of {what} being read", option=option)
        if os.path.samefile(source, target):
            raise ConfigError(f"{str(path)!r} is {what} being read", option=option)
    return target


def write_atomically(path: Path, write, option: str = "--timeline", reading: dict | None = None) -> None:
    """Write via a temp file in the same folder, so a failure never leaves a half-written file
    (what may be replaced: `output_file`)."""
    write_all([(path, write)], option, reading)


def write_all(files: list, option: str, reading: dict | None = None) -> None:
    """Write each (path, write(tmp)) to a temp file in its file's folder, then move them all into
    place: a failure before the moves (a folder that cannot be written, a full disk) leaves every
    file as it was, and never a half-written one (what may be replaced: `output_file`)."""
    targets = [output_file(path, option, reading) for path, _ in files]     # all checked first
    umask = os.umask(0)
    os.umask(umask)
    temps, failed = [], None
    try:
        for (path, write), target in zip(files, targets):
            failed = path
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            temps.append(tmp)
            os.close(fd)
            write(tmp)
            # mkstemp's file is owner-only: give it the mode the file had, or a new file's (umask).
            os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~umask)
        for (path, _), tmp, target in zip(files, temps, targets):
            failed = path
            os.replace(tmp, target)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(failed)!r} ({exc.strerror or type(exc).__name__})",
                          option=option) from None
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
