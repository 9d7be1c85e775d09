"""Kubernetes credentials as the client library finds them, for the operator and `kpilot retune`."""

from __future__ import annotations


class NoCredentials(LookupError):
    """Neither a ServiceAccount nor a kubeconfig; the message says why."""


def load_configuration():
    """In a Pod: the ServiceAccount (`load_incluster_config`, token rotation included); elsewhere
    the usual kubeconfig (`load_kube_config`: $KUBECONFIG, else ~/.kube/config)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise NoCredentials(f"no Kubernetes credentials: neither a ServiceAccount nor a kubeconfig ({exc})") \
                from None
    return configuration
