"""`kpilot operator run`: start the Kopf operator (standalone for development, peering in a cluster)."""

from __future__ import annotations

import logging
import os
import re
import secrets

import kopf

from kpilot import kube_credentials
from kpilot.errors import ConfigError

PRIORITY_ENV = "KPILOT_PEERING_PRIORITY"
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")   # a DNS label, as Kubernetes names namespaces


def peering_priority(current: int = 0) -> int:
    """This replica's Kopf peering priority: $KPILOT_PEERING_PRIORITY, else one given to Kopf
    (non-zero), else a random draw in [1, 2**31). Kopf pauses EVERY operator whose priority ties
    with another live one's, so two replicas left at the default 0 would both stand still; with
    distinct priorities the highest acts and the others stand by until it goes."""
    text = os.environ.get(PRIORITY_ENV, "").strip()
    if text:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"environment variable {PRIORITY_ENV}: expected an integer, got {text!r}") from None
    return current if current else secrets.randbelow(2**31 - 1) + 1


# Numeric settings read from the environment (the Deployment sets some): (type, least, most, default).
NUMERIC_ENV = {"KPILOT_METRICS_PORT": (int, 0, 65535, 8080),            # 0: no metrics endpoint
               "KPILOT_TIMER_RESOLUTION_S": (float, 0.01, 3600.0, 1.0),
               "KPILOT_WATCH_TIMEOUT_S": (int, 1, 86400, 300)}


def env_setting(name: str) -> int | float:
    """A NUMERIC_ENV setting: its default when unset; ConfigError, one line naming the variable,
    for a value that is not a number in range (they were tracebacks, one at import, one at startup)."""
    kind, least, most, default = NUMERIC_ENV[name]
    text = os.environ.get(name)
    if text is None:
        return default
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(text.strip())
    except ValueError:
        raise ConfigError(f"environment variable {name}: expected {what}, got {text!r}") from None
    if not least <= value <= most:      # NaN fails this too
        raise ConfigError(f"environment variable {name}: expected {what} from {least:g} to {most:g}, "
                          f"got {text!r}")
    return value


def check_environment() -> None:
    """Every NUMERIC_ENV setting checked, before anything reads one, and the health endpoint."""
    for name in NUMERIC_ENV:
        env_setting(name)
    health_endpoint()


def health_endpoint(given: str | None = None) -> str:
    """The liveness endpoint (`given`, else KPILOT_HEALTH_ENDPOINT, else :8081/healthz); one line
    for one Kopf cannot serve (it raised "Unsupported scheme" in a traceback once started)."""
    import urllib.parse

    text = given or os.environ.get("KPILOT_HEALTH_ENDPOINT", "http://0.0.0.0:8081/healthz")
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port      # raises ValueError for a port that is not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "http" or not parts.path:
        raise ConfigError(f"environment variable KPILOT_HEALTH_ENDPOINT: expected an http:// URL with a path "
                          f"such as http://0.0.0.0:8081/healthz, got {text!r}")
    return text


LOG_FORMATS = {"full": kopf.LogFormat.FULL, "plain": kopf.LogFormat.PLAIN, "json": kopf.LogFormat.JSON}


def routine_lines() -> frozenset[str]:
    """The timer checks every policy each second (KPILOT_TIMER_RESOLUTION_S) whether a decision
    is due, and Kopf logs each check's return at INFO as "Timer '<handler>' succeeded.": 86,400
    lines a day per policy that say nothing. Named from the handler itself, so a rename follows."""
    from kpilot_operator.handlers import decide_and_apply

    return frozenset({f"Timer {decide_and_apply.__name__!r} succeeded."})


class _DropRoutine(logging.Filter):
    def __init__(self):
        super().__init__()
        self.lines = routine_lines()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.lines


def quiet_routine_logs(verbose: bool) -> logging.Filter | None:
    """At INFO, drop the timer's per-second success line and the probes' access lines (one per
    probe); `--verbose` keeps everything. Returns the filter installed, if any."""
    if verbose:
        return None
    routine = _DropRoutine()
    logging.getLogger("kopf.objects").addFilter(routine)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return routine


def run(*, namespaces: list[str] | None = None, standalone: bool = True,
        liveness_endpoint: str | None = None, verbose: bool = False, log_format: str = "full") -> None:
    """Run until interrupted. Liveness/readiness on KPILOT_HEALTH_ENDPOINT (default :8081/healthz).
    Logs at INFO (DEBUG with `verbose`) on stderr, as `kopf run` sets them up: kopf.run alone
    configures no logging, and the operator said nothing, its warnings included."""
    check_environment()              # before the handlers' import reads the timer resolution
    import kpilot_operator.handlers  # noqa: F401  (registers the handlers)

    if log_format not in LOG_FORMATS:
        raise ConfigError(f"expected one of {', '.join(LOG_FORMATS)}, got {log_format!r}", option="--log-format")
    if namespaces and not standalone:
        # Namespaced peering needs a KopfPeering in each namespace, created at startup: only for
        # namespaces named outright, not for a pattern whose namespaces come and go.
        for namespace in namespaces:
            if not NAMESPACE_NAME.fullmatch(namespace):
                raise ConfigError(f"{namespace!r} with --no-standalone: replicas coordinate through a "
                                  f"KopfPeering in each namespace they serve, so name each namespace "
                                  f"(no patterns)", option="--namespace")
    peering_priority()          # a bad $KPILOT_PEERING_PRIORITY is one line here, not a failed startup
    try:                        # no credentials: one line here, not Kopf's tracebacks from its startup
        kube_credentials.load_configuration()
    except kube_credentials.NoCredentials as exc:
        raise ConfigError(str(exc)) from None
    kopf.configure(verbose=verbose, log_format=LOG_FORMATS[log_format])
    quiet_routine_logs(verbose)

    liveness = health_endpoint(liveness_endpoint)
    kopf.run(
        standalone=standalone,
        peering_name=None if standalone else os.environ.get("KPILOT_PEERING_NAME", "kpilot"),
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        liveness_endpoint=liveness,
        memo=kopf.Memo(peering_namespaces=list(namespaces or ())),
    )
