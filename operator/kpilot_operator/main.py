"""`kpilot operator run`: start the Kopf operator (standalone for development, peering in a cluster)."""

from __future__ import annotations

import os

import kopf


def run(*, namespaces: list[str] | None = None, standalone: bool = True,
        liveness_endpoint: str | None = None) -> None:
    """Run until interrupted. Liveness/readiness on KPILOT_HEALTH_ENDPOINT (default :8081/healthz)."""
    import kpilot_operator.handlers  # noqa: F401  (registers the handlers)

    liveness = liveness_endpoint or os.environ.get("KPILOT_HEALTH_ENDPOINT", "http://0.0.0.0:8081/healthz")
    kopf.run(
        standalone=standalone,
        peering_name=None if standalone else os.environ.get("KPILOT_PEERING_NAME", "kpilot"),
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        liveness_endpoint=liveness,
    )
