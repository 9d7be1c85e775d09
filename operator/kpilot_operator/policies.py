"""Loading the exported policy named by an AutoscalingPolicy, checked by sha256 before any use."""

from __future__ import annotations

import asyncio
import os
import stat

from kpilot.errors import PolicyError
from kpilot.policy import ExportedPolicy, policy_from_bytes, sha256_hex
from kpilot_operator.kube import ApiError
from kpilot_operator.spec import PolicySource

# A policy is kilobytes (the shipped one ~100 KiB; a ConfigMap holds at most 1 MiB): anything far
# larger is a wrong path, and reading it whole could take the operator's memory with it.
MAX_POLICY_BYTES = 16 * 1024 * 1024


def read_policy_file(path: str) -> bytes:
    """A policy file's bytes: a regular file of at most MAX_POLICY_BYTES (a spec naming /dev/zero
    or a FIFO would otherwise read forever or block). Checked before it is opened (opening a device
    can do something), and again on what was opened."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise PolicyError("not a regular file", path=path)
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PolicyError("not a regular file", path=path)
        if info.st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{info.st_size:,} bytes: a policy is at most {MAX_POLICY_BYTES:,}", path=path)
        with os.fdopen(fd, "rb") as fh:
            fd = -1                                  # the file object closes it
            data = fh.read(MAX_POLICY_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_POLICY_BYTES:                 # grew since fstat
        raise PolicyError(f"more than {MAX_POLICY_BYTES:,} bytes", path=path)
    return data


class PolicyLoader:
    """Reads the bytes every tick (a ConfigMap edit takes effect), parses only when they change."""

    def __init__(self, cluster):
        self.cluster = cluster
        self._parsed: dict[str, ExportedPolicy] = {}   # digest of the bytes -> parsed policy

    async def read(self, source: PolicySource, namespace: str) -> bytes:
        where = source.describe()
        try:
            if source.config_map:
                name, key = source.config_map
                return await self.cluster.read_configmap(namespace, name, key)
            # In a thread: a slow volume must not stall every other policy's tick and the probes.
            return await asyncio.to_thread(read_policy_file, source.path)
        except PolicyError as exc:
            raise PolicyError(exc.message, path=where) from None
        except ApiError as exc:
            reason = {404: "not found", 403: "forbidden (grant get on it, see README)"}.get(exc.status, str(exc))
            raise PolicyError(reason, path=where) from None
        except KeyError as exc:
            raise PolicyError(str(exc.args[0]), path=where) from None
        except OSError as exc:
            raise PolicyError(f"cannot read ({exc.strerror})", path=where) from None

    async def load(self, source: PolicySource, namespace: str) -> ExportedPolicy:
        data = await self.read(source, namespace)
        digest = sha256_hex(data)
        if digest == source.sha256 and digest in self._parsed:
            return self._parsed[digest]
        policy = policy_from_bytes(data, source=source.describe(), expected_sha256=source.sha256)
        self._parsed[digest] = policy
        return policy


def interval_note(policy: ExportedPolicy, interval_s: float) -> str | None:
    """A note when the policy decides at another interval than it was trained at: it reads request
    rates and latency over the interval, and its smoothing counts decisions."""
    trained = ((policy.manifest.get("manifest") or {}).get("env") or {}).get("decision_interval_s")
    if not isinstance(trained, (int, float)) or abs(float(trained) - interval_s) < 1e-9:
        return None
    return (f"decisionIntervalSeconds {interval_s:g} differs from the {float(trained):g} s the policy was "
            "trained at: its rates, latency and smoothing assume that interval")
