"""Loading the exported policy named by an AutoscalingPolicy, checked by sha256 before any use."""

from __future__ import annotations

from kpilot.errors import PolicyError
from kpilot.policy import ExportedPolicy, policy_from_bytes, sha256_hex
from kpilot_operator.kube import ApiError
from kpilot_operator.spec import PolicySource


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
            with open(source.path, "rb") as fh:
                return fh.read()
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
