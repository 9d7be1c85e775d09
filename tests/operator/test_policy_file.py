"""Reading a policy named by `spec.policy.path` (only a regular file of a policy's size), and the
operator's own metrics of applied targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kpilot.errors import PolicyError
from kpilot_operator.policies import MAX_POLICY_BYTES, read_policy_file


def test_a_regular_file_is_read_whole(tmp_path):
    f = tmp_path / "policy.json"
    f.write_bytes(b'{"format": "kpilot-policy/1"}')
    assert read_policy_file(str(f)) == b'{"format": "kpilot-policy/1"}'


def test_devices_fifos_and_folders_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)                      # no writer: a blocking read would hang the operator
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        with pytest.raises(PolicyError, match="not a regular file"):
            read_policy_file(path)


def test_a_file_far_larger_than_a_policy_is_refused(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(MAX_POLICY_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(PolicyError, match="a policy is at most"):
        read_policy_file(str(big))


def test_forgetting_targets_drops_only_the_revisions_not_kept():
    from prometheus_client import REGISTRY

    from kpilot_operator import telemetry

    telemetry.mark_acting()          # as a tick does: a standby's gauges are not served
    for rev in ("a-1", "a-2"):
        telemetry.APPLIED_TARGET.labels("forget-ns", "a", rev).set(7)
    telemetry.APPLIED_TARGET.labels("other-ns", "b", "b-1").set(3)
    telemetry.forget_targets("forget-ns", keep={"a-1"})
    value = lambda ns, svc, rev: REGISTRY.get_sample_value(
        "kpilot_applied_target", {"namespace": ns, "service": svc, "revision": rev})
    assert value("forget-ns", "a", "a-1") == 7 and value("forget-ns", "a", "a-2") is None
    assert value("other-ns", "b", "b-1") == 3               # another namespace is not touched


def test_a_standby_replica_serves_no_gauges(monkeypatch):
    # Kopf's peering pauses the standby: it kept serving the targets and stale counts it set as
    # the leader, beside the new leader's. Gauges are served while this replica's timer runs.
    import time

    from prometheus_client import REGISTRY

    from kpilot_operator import telemetry

    series = {"namespace": "standby-ns", "service": "a", "revision": "a-1"}
    telemetry.mark_acting()
    telemetry.APPLIED_TARGET.labels(**series).set(12)
    telemetry.ERRORS.labels(namespace="standby-ns", policy="p", kind="WriteFailed").inc()
    assert REGISTRY.get_sample_value("kpilot_applied_target", series) == 12
    monkeypatch.setattr(telemetry, "_last_acted", time.monotonic() - telemetry.STANDBY_AFTER_S - 1)
    assert REGISTRY.get_sample_value("kpilot_applied_target", series) is None
    errors = {"namespace": "standby-ns", "policy": "p", "kind": "WriteFailed"}
    assert REGISTRY.get_sample_value("kpilot_errors_total", errors) == 1       # totals of this process stay
    telemetry.mark_acting()                                                 # the leader again
    assert REGISTRY.get_sample_value("kpilot_applied_target", series) == 12


def test_a_decision_interval_other_than_the_trained_one_is_noted():
    from kpilot.policy import load_policy
    from kpilot_operator.policies import interval_note

    shipped = load_policy(Path(__file__).resolve().parents[2] / "policies" / "default")   # trained at 30 s
    assert interval_note(shipped, 30.0) is None
    assert interval_note(shipped, 60.0) == ("decisionIntervalSeconds 60 differs from the 30 s the policy was "
                                            "trained at: its rates, latency and smoothing assume that interval")
