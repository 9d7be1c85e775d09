"""Kubernetes credentials as the client library finds them, for the operator and `kpilot retune`."""

from __future__ import annotations


class NoCredentials(LookupError):
    """Neither a ServiceAccount nor a kubeconfig; the message says why."""


NONE = "no Kubernetes credentials: neither a ServiceAccount nor a kubeconfig"


def _malformed(exc: Exception, where: str) -> str:
    """What is wrong with a kubeconfig the client library could not read (`where`: $KUBECONFIG or
    its default), on one line: the library lets its YAML parser's, decoder's and base64's errors
    through, not as a ConfigException."""
    import binascii

    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark          # names the very file of a $KUBECONFIG list
        why = f"{mark.name}: not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    elif isinstance(exc, (UnicodeDecodeError, yaml.reader.ReaderError)):     # ReaderError: control characters
        why = f"{where}: not a text file (binary or compressed?)"
    elif isinstance(exc, binascii.Error):
        why = f"{where}: invalid base64 in a *-data field ({exc})"
    else:
        why = f"{where}: malformed ({type(exc).__name__}: {exc})"
    return " ".join(why.split())


def load_configuration():
    """In a Pod: the ServiceAccount (`load_incluster_config`, token rotation included); elsewhere
    the usual kubeconfig (`load_kube_config`: $KUBECONFIG, else ~/.kube/config)."""
    import yaml
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            # The library does not say which file it looked for: $KUBECONFIG, or its default.
            where = config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION
            raise NoCredentials(f"{NONE} (kubeconfig {where}: {exc})") from None
        except (yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError) as exc:
            # Not YAML, binary, bad base64 in certificate-authority-data (ValueError: Unicode and
            # base64 errors), or YAML of another shape (a list, a cluster that is a string).
            why = _malformed(exc, config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
            raise NoCredentials(f"{NONE} (kubeconfig {why})") from None
    return configuration
