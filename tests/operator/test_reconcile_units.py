"""Pure parts: guardrails, the tick decision, annotation deltas, spec parsing, version detection."""

from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import replace

import pytest

from kpilot_operator import guardrails
from kpilot_operator.knative import json_patch_ops, parse_version, service_view, traffic_revisions, write_path_for
from kpilot_operator.metrics import QUERIES, QUERIES_PER_TICK, assemble, promql
from kpilot_operator.annotations import (ABSENT, CHANGED_AT, ORIGINAL, OWNER, PAUSED, TARGET, Assert, Holder,
                                         Restore, annotation_delta)
from kpilot_operator.reconcile import ServiceView, decide
from kpilot_operator.spec import SpecError, parse_spec, selector_matches, selector_to_query
from kpilot.policy import policy_from_bytes
from operator_support import HEALTHY, constant_policy_bytes

NOW = 1_000_000.0
POLICY = policy_from_bytes(constant_policy_bytes(40.0))


def spec(**over):
    base = {"selector": {}, "policy": {"path": "/p", "sha256": "a" * 64}, "metrics": {"kubernetes": {}},
            "mode": "Enforce", "decisionIntervalSeconds": 10, "bounds": {"minTarget": 2, "maxTarget": 150},
            "maxStepRatio": 10, "cooldownSeconds": 0}
    base.update(over)
    return parse_spec(base)


def holder(name="r1", service="s1", **ann):
    return Holder("Revision", "ns", name, service, "1", ann)


def reading(**over):
    return {**HEALTHY, "starting_pods": 0.0, **over}


def run(sp, services, holders, readings, last_fresh=None, now=NOW):
    return decide(policy_name="p", spec=sp, services=services, holders={h.name: h for h in holders},
                  readings=readings, policy=POLICY, last_fresh=last_fresh or {}, now=now)


SVC = ServiceView("s1", "ns", False, ("r1",))


# --- guardrails ---

def test_step_limit_then_bounds():
    g = guardrails.guard(previous=100, proposed=10, min_target=2, max_target=150, max_step_ratio=0.5,
                         cooldown_s=0, last_change_at=None, now=NOW)
    assert g.changed and g.target == pytest.approx(66.67) and g.reason == "StepLimited"
    g = guardrails.guard(previous=100, proposed=400, min_target=2, max_target=120, max_step_ratio=10,
                         cooldown_s=0, last_change_at=None, now=NOW)
    assert g.target == 120 and g.reason == "Bounded"


def test_cooldown_and_deadband_hold_the_previous_target():
    kw = dict(min_target=2, max_target=150, max_step_ratio=1, now=NOW)
    assert guardrails.guard(previous=50, proposed=30, cooldown_s=60, last_change_at=NOW - 10, **kw).reason == "Cooldown"
    assert guardrails.guard(previous=50, proposed=30, cooldown_s=60, last_change_at=NOW - 61, **kw).changed
    assert guardrails.guard(previous=50, proposed=50.5, cooldown_s=0, last_change_at=None, **kw).reason == "WithinDeadband"
    # Outside the bounds, the cooldown does not keep a target the bounds forbid.
    assert guardrails.guard(previous=500, proposed=500, cooldown_s=60, last_change_at=NOW, **kw).target == 150


@pytest.mark.parametrize("proposed", [math.nan, math.inf, -math.inf])
def test_a_proposal_that_is_not_a_number_is_no_decision(proposed):
    # NaN passed every comparison: it was written as maxTarget, past the step limit.
    g = guardrails.guard(previous=70, proposed=proposed, min_target=1, max_target=1000, max_step_ratio=0.5,
                         cooldown_s=0, last_change_at=None, now=NOW)
    assert (g.target, g.changed, g.reason) == (70, False, "InvalidDecision")


def test_format_target():
    assert guardrails.format_target(40.0) == "40" and guardrails.format_target(12.345) == "12.35"


# --- annotation deltas and patches ---

def test_assert_records_original_once_and_restore_puts_it_back():
    first = annotation_delta({TARGET: "70"}, Assert("40", "p", NOW))
    assert first[ORIGINAL] == "70" and first[OWNER] == "p" and first[TARGET] == "40"
    after = {TARGET: "40", ORIGINAL: "70", OWNER: "p"}
    assert ORIGINAL not in annotation_delta(after, Assert("30", "p", NOW))
    assert annotation_delta(after, Restore()) == {TARGET: "70", ORIGINAL: None, OWNER: None,
                                                  CHANGED_AT: None}
    assert annotation_delta({TARGET: "40", ORIGINAL: ABSENT, OWNER: "p"}, Restore())[TARGET] is None
    assert annotation_delta({TARGET: "70"}, Restore()) == {}          # never touched: nothing to do
    # A restore decided for a gone policy's revision, recomputed after a live policy took it over
    # in between (a conflict), leaves the take-over alone; for the owner it was decided for, it restores.
    taken = {TARGET: "40", ORIGINAL: "70", OWNER: "live"}
    assert annotation_delta(taken, Restore("gone")) == {}
    assert annotation_delta(taken, Restore("live"))[TARGET] == "70"


def test_a_write_recomputed_after_a_conflict_respects_what_changed_in_between():
    intent = Assert("7", "q", NOW, expected="5")
    # Another policy took the revision in between: q does not overwrite p's target.
    assert annotation_delta({TARGET: "5", ORIGINAL: ABSENT, OWNER: "p"}, intent) == {}
    # Someone set the target by hand in between: not overwritten; the next tick reads 9.
    assert annotation_delta({TARGET: "9"}, intent) == {}
    # Nothing changed: the write goes ahead.
    assert annotation_delta({TARGET: "5"}, intent)[TARGET] == "7"
    assert annotation_delta({}, Assert("7", "q", NOW, expected=ABSENT))[ORIGINAL] == ABSENT


def test_json_patch_is_guarded_by_resource_version():
    ops = json_patch_ops({"metadata": {"resourceVersion": "7", "annotations": {TARGET: "1"}}},
                         {TARGET: None, ORIGINAL: "1"})
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert {"op": "remove", "path": "/metadata/annotations/autoscaling.knative.dev~1target"} in ops
    ops = json_patch_ops({"metadata": {"resourceVersion": "7"}}, {TARGET: "5", ORIGINAL: None})
    assert ops[1] == {"op": "add", "path": "/metadata/annotations", "value": {TARGET: "5"}}


# --- the decision ---

def test_decide_applies_policy_target_in_one_batch():
    plan = run(spec(), [SVC], [holder(**{TARGET: "70"})], {"r1": reading()})
    assert [(w.holder.name, w.target, w.reason) for w in plan.writes] == [("r1", 40.0, "Applied")]
    assert plan.services[0].observation["concurrency_stable"] == 30 and plan.decisions == 1



def test_each_revision_is_decided_on_its_own_observation():
    # A policy whose answer moves with every feature: the decision must be the policy's answer to
    # the revision's own readings, its current target and the time of day, revision by revision
    # in one batched call (the constant policies elsewhere would answer anything the same).
    from kpilot.action import ActionSpec
    from kpilot.observation import N_FEATURES, encode
    from kpilot.policy import policy_to_bytes
    import numpy as np

    weights = np.linspace(0.02, 0.08, N_FEATURES)[None, :]
    policy = policy_from_bytes(policy_to_bytes(layers=[(weights, np.array([-0.3]))], obs_mean=np.zeros(N_FEATURES),
                                               obs_var=np.ones(N_FEATURES), action_spec=ActionSpec(1.0, 200.0)))
    services = [ServiceView("s1", "ns", False, ("r1",)), ServiceView("s2", "ns", False, ("r2",))]
    holders = {"r1": holder("r1", "s1", **{TARGET: "70"}), "r2": holder("r2", "s2", **{TARGET: "12"})}
    readings = {"r1": reading(), "r2": reading(concurrency_stable=3.0, request_rate=2.0, latency_p95_s=2.5)}
    plan = decide(policy_name="p", spec=spec(bounds={"minTarget": 1, "maxTarget": 200}, maxStepRatio=100),
                  services=services, holders=holders, readings=readings, policy=policy, last_fresh={}, now=NOW)

    def expected(rev: str, current: float) -> float:
        raw = {k: v for k, v in readings[rev].items() if k != "sample_time"}
        obs = encode(**{**raw, "target": current, "time_of_day_s": NOW % 86400.0})
        return guardrails.round_target(float(np.ravel(policy.target(obs))[0]))

    decisions = {st.name: st.decision for st in plan.services}
    assert decisions == {"s1": expected("r1", 70.0), "s2": expected("r2", 12.0)}
    assert decisions["s1"] != decisions["s2"]

def test_the_policy_step_limit_applies_unless_the_spec_sets_one():
    from kpilot.action import ActionSpec
    from kpilot.observation import N_FEATURES
    from kpilot.policy import policy_to_bytes
    import numpy as np

    limited = ActionSpec(1.0, 200.0, max_step_ratio=1.0)        # trained to move x2 per decision
    to_three = policy_from_bytes(policy_to_bytes(
        layers=[(np.zeros((1, N_FEATURES)), np.array([float(limited.to_action(3.0))]))],
        obs_mean=np.zeros(N_FEATURES), obs_var=np.ones(N_FEATURES), action_spec=limited))

    def first_write(sp, policy):
        plan = decide(policy_name="p", spec=sp, services=[SVC], holders={"r1": holder(**{TARGET: "100"})},
                      readings={"r1": reading()}, policy=policy, last_fresh={}, now=NOW)
        return plan.writes[0].target, plan.writes[0].reason

    no_step = {"maxStepRatio": None}
    assert first_write(spec(bounds={"minTarget": 1, "maxTarget": 200}, **no_step), to_three) == (50.0, "StepLimited")
    assert first_write(spec(bounds={"minTarget": 1, "maxTarget": 200}, maxStepRatio=0.25), to_three) == (80.0, "StepLimited")
    # A policy without a limit of its own gets the default, x1.5.
    assert first_write(spec(bounds={"minTarget": 1, "maxTarget": 200}, **no_step), POLICY) == (66.67, "StepLimited")


def test_the_policy_smoothing_applies_before_the_guardrails():
    from kpilot.action import ActionSpec
    from kpilot.observation import N_FEATURES
    from kpilot.policy import policy_to_bytes
    import numpy as np

    smoothed = ActionSpec(1.0, 200.0, smoothing=0.5)           # trained to move half way (log scale)
    to_four = policy_from_bytes(policy_to_bytes(
        layers=[(np.zeros((1, N_FEATURES)), np.array([float(smoothed.to_action(4.0))]))],
        obs_mean=np.zeros(N_FEATURES), obs_var=np.ones(N_FEATURES), action_spec=smoothed))

    def first(sp, current, owner="p"):
        managed = {ORIGINAL: "100", OWNER: owner} if owner else {}
        plan = decide(policy_name="p", spec=sp, services=[SVC], holders={"r1": holder(**{TARGET: current}, **managed)},
                      readings={"r1": reading()}, policy=to_four, last_fresh={}, now=NOW)
        return plan.services[0].decision, (plan.writes[0].target if plan.writes else None)

    wide = spec(bounds={"minTarget": 1, "maxTarget": 200}, maxStepRatio=100)
    assert first(wide, "100") == (20.0, 20.0)                 # sqrt(100 x 4): half way from 100 to 4
    assert first(wide, "16") == (8.0, 8.0)
    # The spec's step limit then applies to the smoothed target: x1.5 from 100 is 66.67.
    assert first(spec(bounds={"minTarget": 1, "maxTarget": 200}, maxStepRatio=0.5), "100") == (20.0, 66.67)
    # A revision the policy does not manage yet (Knative's own 100) is taken over without
    # smoothing: there is no loop of the policy's own to damp.
    assert first(wide, "100", owner=None) == (4.0, 4.0)
    # A policy trained with immediate cuts lowers a managed revision's target at once; raises
    # stay smoothed: from 2 to 4 is sqrt(2 x 4).
    to_four = policy_from_bytes(policy_to_bytes(
        layers=[(np.zeros((1, N_FEATURES)), np.array([float(smoothed.to_action(4.0))]))],
        obs_mean=np.zeros(N_FEATURES), obs_var=np.ones(N_FEATURES),
        action_spec=ActionSpec(1.0, 200.0, smoothing=0.5, immediate_cuts=True)))
    assert first(wide, "100") == (4.0, 4.0)
    assert first(wide, "2") == (2.83, 2.83)


def test_decide_holds_then_falls_back_then_restores_without_fallback():
    sp = spec(fallbackTarget=25, staleAfterSeconds=30)
    h = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p"})
    held = run(sp, [SVC], [h], {}, last_fresh={"r1": NOW - 10})
    assert held.writes == [] and held.services[0].reason == "MetricsStaleHolding"
    fb = run(sp, [SVC], [h], {}, last_fresh={"r1": NOW - 31})
    assert fb.writes[0].target == 25 and fb.services[0].reason == "Fallback"
    old_sample = run(sp, [SVC], [h], {"r1": reading(sample_time=NOW - 300)})
    assert old_sample.services[0].reason == "Fallback"
    restored = run(spec(staleAfterSeconds=30), [SVC], [h], {}, last_fresh={"r1": NOW - 31})
    assert isinstance(restored.writes[0].intent, Restore) and restored.writes[0].target == 70


def test_the_freshness_memory_keeps_only_revisions_that_still_exist():
    # It kept every revision ever seen, for as long as the operator ran.
    plan = run(spec(), [SVC], [holder(**{TARGET: "70"}), holder("r2", **{TARGET: "70"})], {"r1": reading()},
               last_fresh={"r1": NOW - 5, "r2": NOW - 50, "deleted-00001": NOW - 9})
    assert plan.last_fresh == {"r1": NOW, "r2": NOW - 50}       # r2 has no traffic, but is still there


def test_dry_run_says_what_it_would_do_when_metrics_go_stale():
    h = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p"})
    fb = run(spec(mode="DryRun", fallbackTarget=25, staleAfterSeconds=30), [SVC], [h], {},
             last_fresh={"r1": NOW - 31})
    # Before: reason Fallback and appliedTarget 25 (an Event said so), while nothing was written.
    assert fb.writes == [] and fb.services[0].reason == "DryRun" and fb.services[0].applied == 40
    assert "would fall back to 25" in fb.services[0].message
    rs = run(spec(mode="DryRun", staleAfterSeconds=30), [SVC], [h], {}, last_fresh={"r1": NOW - 31})
    assert rs.writes == [] and rs.services[0].reason == "DryRun" and "would restore" in rs.services[0].message


@pytest.mark.parametrize("annotations, why", [
    ({"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev", "autoscaling.knative.dev/metric": "cpu"},
     "class hpa"),
    ({"autoscaling.knative.dev/metric": "rps"}, "metric rps"),
    # What the policy observes would change: its concurrency features are 60 s / 10 % linear averages.
    ({"autoscaling.knative.dev/window": "300s"}, "window 300s: the policy observes concurrency averaged "
                                                 "over the 60 s stable window"),
    ({"autoscaling.knative.dev/window": "sixty"}, "window sixty"),
    ({"autoscaling.knative.dev/panic-window-percentage": "20"}, "panic window of 10 %"),
    ({"autoscaling.knative.dev/metric-aggregation-algorithm": "weightedExponential"}, "linear window averages"),
    # The same target at 100 % puts 43 % more load on each pod than at the 70 % it trained with.
    ({"autoscaling.knative.dev/target-utilization-percentage": "100"},
     "r1: autoscaling.knative.dev/target-utilization-percentage 100: the policy was trained with a target "
     "utilization of 70 %"),
])
def test_revisions_not_scaled_on_concurrency_by_the_kpa_are_left_alone(annotations, why):
    # The policy's number is a concurrency target: on an HPA revision it would be a CPU percentage.
    plan = run(spec(), [SVC], [holder(**{TARGET: "70", **annotations})], {"r1": reading()})
    assert plan.writes == [] and plan.services[0].reason == "UnsupportedAutoscaling"
    assert why in plan.services[0].message
    # An explicit KPA on concurrency is managed as usual.
    kpa = {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev", "autoscaling.knative.dev/metric": "concurrency"}
    assert run(spec(), [SVC], [holder(**{TARGET: "70", **kpa})], {"r1": reading()}).writes[0].target == 40
    # ... and so are the windows it was trained with, however they are written.
    same = {"autoscaling.knative.dev/window": "1m", "autoscaling.knative.dev/panic-window-percentage": "10.0",
            "autoscaling.knative.dev/metric-aggregation-algorithm": "Linear",
            "autoscaling.knative.dev/target-utilization-percentage": "70.0"}
    assert run(spec(), [SVC], [holder(**{TARGET: "70", **same})], {"r1": reading()}).writes[0].target == 40


def test_the_clusters_windows_apply_where_a_revision_sets_none():
    from kpilot_operator.knative import cluster_autoscaling_from

    cluster = cluster_autoscaling_from({"data": {"stable-window": "5m", "panic-window-percentage": "10",
                                                 "container-concurrency-target-default": "100"}})
    assert cluster == {"autoscaling.knative.dev/window": "5m",
                       "autoscaling.knative.dev/panic-window-percentage": "10"}
    wide = Holder("Revision", "ns", "r1", "s1", "1", {TARGET: "70"}, cluster_autoscaling=cluster)
    plan = run(spec(), [SVC], [wide], {"r1": reading()})
    assert plan.writes == [] and plan.services[0].reason == "UnsupportedAutoscaling"
    assert "config-autoscaler's stable-window 5m: the policy observes concurrency averaged over the 60 s" \
        in plan.services[0].message
    # The revision's own annotation wins over the cluster's, as in Knative.
    own = replace(wide, annotations={TARGET: "70", "autoscaling.knative.dev/window": "60s"})
    assert run(spec(), [SVC], [own], {"r1": reading()}).writes[0].target == 40
    assert cluster_autoscaling_from({"data": {}}) == {} and cluster_autoscaling_from(None) == {}


def test_go_durations_read_as_knative_reads_the_window():
    from kpilot_operator.annotations import go_duration_s

    assert [go_duration_s(t) for t in ("60s", "1m", "1m30s", "1.5m", "90000ms", "+60s", "0")] == [60, 60, 90, 90, 90, 60, 0]
    assert [round(go_duration_s(t), 9) for t in ("60000000us", "60000000\u00b5s", "60000000000ns")] == [60, 60, 60]
    assert all(math.isnan(go_duration_s(t)) for t in ("", "60", "1 m", "m", "1d"))


def test_container_concurrency_caps_the_target_as_knative_does():
    capped = Holder("Revision", "ns", "r1", "s1", "1", {TARGET: "70"}, 100.0, 10.0)
    assert capped.current_target == 10                       # Knative runs min(annotation, cc)
    assert Holder("Revision", "ns", "r1", "s1", "1", {}, 20.0).current_target == 20   # the cluster's default
    # The constant policy proposes 40; above cc=10 Knative would cap it, so nothing is written.
    plan = run(spec(), [SVC], [capped], {"r1": reading()})
    assert plan.writes == [] and plan.services[0].reason == "WithinDeadband"
    low = Holder("Revision", "ns", "r1", "s1", "1", {TARGET: "5"}, 100.0, 10.0)
    assert run(spec(), [SVC], [low], {"r1": reading()}).writes[0].target == 10


def test_a_service_splitting_traffic_shows_each_revisions_outcome():
    split = ServiceView("s1", "ns", False, ("r1", "r2", "r3"))
    other = holder("r3", **{TARGET: "40", ORIGINAL: "70", OWNER: "q"})
    plan = run(spec(), [split], [holder("r1", **{TARGET: "70"}), other], {"r1": reading()})
    entries = {e["name"]: e for e in plan.services[0].as_dict("now")["revisionStatus"]}
    # Before: one reason for the Service, the last revision's; r2's absence and r3's owner were hidden.
    assert entries["r1"]["reason"] == "Applied" and entries["r1"]["appliedTarget"] == 40
    assert entries["r2"]["reason"] == "RevisionNotFound" and entries["r3"]["reason"] == "ClaimedByOtherPolicy"
    assert "revisionStatus" not in run(spec(), [SVC], [holder(**{TARGET: "70"})], {"r1": reading()}
                                       ).services[0].as_dict("now")


def test_a_split_services_revisions_do_not_mix_their_observations():
    # r1 observed and decided; r2 has no reading: the Service-level summary is r2's (stale,
    # holding) and must not show r1's observation and decision as if they were r2's.
    split = ServiceView("s1", "ns", False, ("r1", "r2"))
    plan = run(spec(), [split], [holder("r1", **{TARGET: "70"}), holder("r2", **{TARGET: "70"})],
               {"r1": reading()})
    out = plan.services[0].as_dict("now")
    entries = {e["name"]: e for e in out["revisionStatus"]}
    assert entries["r1"]["reason"] == "Applied" and entries["r1"]["lastDecision"] == 40
    assert entries["r1"]["lastObservation"]["concurrency_stable"] == reading()["concurrency_stable"]
    assert entries["r2"]["reason"] == "MetricsStaleHolding"
    assert "lastObservation" not in entries["r2"] and "lastDecision" not in entries["r2"]
    assert out["reason"] == "MetricsStaleHolding"
    assert "lastObservation" not in out and "lastDecision" not in out and out["appliedTarget"] == 70


def test_targets_never_end_outside_the_bounds():
    kw = dict(max_step_ratio=10, cooldown_s=0, last_change_at=None, now=NOW)
    # A previous target just above the maximum is pulled inside, not kept by the deadband.
    g = guardrails.guard(previous=4.55, proposed=40, min_target=1, max_target=4.5, **kw)
    assert g.changed and g.target == 4.5
    # Rounding to the annotation's two decimals stays inside a band's bounds.
    g = guardrails.guard(previous=10, proposed=40, min_target=1, max_target=4.9995, **kw)
    assert g.target == 4.99
    g = guardrails.guard(previous=10, proposed=0.5, min_target=1.0049, max_target=100, **kw)
    assert g.target == 1.01


def test_decide_paused_claimed_released_dryrun_and_off():
    paused = ServiceView("s1", "ns", True, ("r1",))
    owned = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p"})
    # The constant policy proposes 40: a revision at 25 would be moved were it not paused.
    at_25 = holder(**{TARGET: "25", ORIGINAL: "70", OWNER: "p"})
    assert run(spec(), [SVC], [at_25], {"r1": reading()}).writes          # not paused: moved
    plan = run(spec(), [paused], [at_25], {"r1": reading()})
    assert plan.writes == [] and plan.services[0].reason == "Paused"
    # A paused Service's revision that loses its traffic keeps its (hand-set) target: it is not
    # released, as a Service leaving the selector is.
    rolled = ServiceView("s1", "ns", True, ("r2",))
    hand_set = holder(**{TARGET: "10", ORIGINAL: "70", OWNER: "p"})
    plan = run(spec(), [rolled], [hand_set, holder("r2", **{TARGET: "90"})], {"r2": reading()})
    assert plan.writes == [] and plan.services[0].reason == "Paused"
    invalid = ServiceView("s1", "ns", False, ("r2",), invalid="kpilot.dev/band: 'x' is not a number")
    assert run(spec(), [invalid], [hand_set], {"r2": reading()}).writes == []
    other = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "q"})
    assert run(spec(), [SVC], [other], {"r1": reading()}).services[0].reason == "ClaimedByOtherPolicy"
    released = run(spec(), [], [owned], {})            # the Service left the selector
    assert isinstance(released.writes[0].intent, Restore) and released.writes[0].reason == "Released"
    dry = run(spec(mode="DryRun"), [SVC], [holder(**{TARGET: "70"})], {"r1": reading()})
    assert dry.writes == [] and dry.services[0].reason == "DryRun"
    off = run(spec(mode="Off"), [SVC], [owned, holder("r9", **{TARGET: "3"})], {})
    assert [w.holder.name for w in off.writes] == ["r1"]


def test_a_revision_of_a_policy_that_no_longer_exists_is_taken_over_with_its_original():
    # A policy whose finalizer was removed by hand left its revisions owned by a name nothing
    # answers to: every later policy reported ClaimedByOtherPolicy and none could restore them.
    orphan = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "old"})
    assert run(spec(), [SVC], [orphan], {"r1": reading()}).services[0].reason == "ClaimedByOtherPolicy"
    plan = decide(policy_name="p", spec=spec(), services=[SVC], holders={"r1": orphan}, readings={"r1": reading()},
                  policy=POLICY, last_fresh={}, now=NOW, gone_owners={"old"})
    (write,) = plan.writes          # the policy's 40 is the target already: the write takes ownership
    assert write.intent.adopt == "old" and "was managed by old, which no longer exists" in plan.services[0].message
    delta = annotation_delta(orphan.annotations, write.intent)
    adopted = holder(**{**orphan.annotations, **delta})
    assert delta[OWNER] == "p" and TARGET not in delta and adopted.annotations[ORIGINAL] == "70"
    # What it took over it restores, to the original from before any policy.
    off = run(spec(mode="Off"), [SVC], [adopted], {})
    assert annotation_delta(adopted.annotations, off.writes[0].intent)[TARGET] == "70"
    # A live owner is still another policy's, and an Assert not marked to adopt changes nothing.
    assert annotation_delta(orphan.annotations, replace(write.intent, adopt=None)) == {}
    def gone(sp, services, holders, readings, last_fresh=None):
        return decide(policy_name="p", spec=sp, services=services, holders={h.name: h for h in holders},
                      readings=readings, policy=POLICY, last_fresh=last_fresh or {}, now=NOW, gone_owners={"old"})
    dry = gone(spec(mode="DryRun"), [SVC], [orphan], {"r1": reading()})
    assert dry.writes == [] and "would take it over" in dry.services[0].message
    # Stale without a fallback: restored to the original, as its own would be (it said
    # FallbackRestored and wrote nothing).
    (stale,) = gone(spec(staleAfterSeconds=30), [SVC], [orphan], {}, last_fresh={"r1": NOW - 31}).writes
    assert isinstance(stale.intent, Restore) and stale.reason == "FallbackRestored" and stale.target == 70
    # A revision of a selected Service that lost its traffic is let go, restored; one of a Service
    # this policy does not select stays as it is.
    idle = holder("r0", **{TARGET: "40", ORIGINAL: "70", OWNER: "old"})
    elsewhere = holder("x1", "other", **{TARGET: "40", ORIGINAL: "70", OWNER: "old"})
    plan = gone(spec(), [SVC], [orphan, idle, elsewhere], {"r1": reading()})
    assert {w.holder.name: (type(w.intent).__name__, w.reason) for w in plan.writes} == {
        "r1": ("Assert", plan.writes[0].reason), "r0": ("Restore", "Released")}


def test_a_base_target_bounds_the_policy_to_its_band():
    # The constant policy proposes 40; the spec allows 2..150.
    assert guardrails.service_bounds(2, 150, None, None) == (2, 150)
    assert guardrails.service_bounds(2, 150, 10, None) == pytest.approx((10 / 1.5, 15))     # default x1.5
    assert guardrails.service_bounds(2, 150, 10, 1) == (10, 10)                             # pinned
    assert guardrails.service_bounds(2, 150, 1, 1.5) == (2, 2)          # below the spec: its nearer bound

    def first(svc, sp=None, current="100"):
        plan = run(sp or spec(), [svc], [holder(**{TARGET: current})], {"r1": reading()})
        return plan.writes[0].target if plan.writes else None, plan.services[0]

    target, status = first(ServiceView("s1", "ns", False, ("r1",), base_target=10))
    assert target == 15 and status.reason == "Bounded" and status.as_dict("t")["bounds"] == {
        "minTarget": pytest.approx(6.67, abs=0.01), "maxTarget": 15}
    assert first(ServiceView("s1", "ns", False, ("r1",), base_target=10, band=1))[0] == 10
    assert first(ServiceView("s1", "ns", False, ("r1",), base_target=10), spec(band=3))[0] == 30
    assert first(ServiceView("s1", "ns", False, ("r1",), base_target=10, band=5), spec(band=3))[0] == 40
    # Without a base target only the spec's bounds apply, and the status carries none.
    target, status = first(SVC)
    assert target == 40 and "bounds" not in status.as_dict("t")


def test_a_stale_service_falls_back_to_its_base_target():
    sp = spec(fallbackTarget=25, staleAfterSeconds=30)
    h = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p"})
    based = ServiceView("s1", "ns", False, ("r1",), base_target=3)
    fb = run(sp, [based], [h], {}, last_fresh={"r1": NOW - 31})
    assert fb.writes[0].target == 3 and fb.services[0].reason == "Fallback"
    # ... also without a fallbackTarget (instead of restoring the original).
    fb = run(spec(staleAfterSeconds=30), [based], [h], {}, last_fresh={"r1": NOW - 31})
    assert fb.writes[0].target == 3 and isinstance(fb.writes[0].intent, Assert)


def test_service_annotations_are_read_and_a_bad_one_holds_the_service():
    def view(**ann):
        return service_view({"metadata": {"name": "s1", "namespace": "ns", "annotations": ann},
                             "status": {"traffic": [{"revisionName": "r1", "percent": 100}]}})

    v = view(**{"kpilot.dev/base-target": "2.5", "kpilot.dev/band": "1"})
    assert (v.base_target, v.band, v.invalid) == (2.5, 1.0, "")
    assert (view().base_target, view().band) == (None, None)
    for key, value in (("kpilot.dev/base-target", "0"), ("kpilot.dev/base-target", "fast"),
                       ("kpilot.dev/band", "0.5"), ("kpilot.dev/band", "inf")):
        bad = view(**{key: value})
        assert key in bad.invalid and repr(value) in bad.invalid
        owned = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p"})
        plan = run(spec(), [bad], [owned], {"r1": reading()})
        # Held as it is: neither the policy's 40 -> nothing to write, nor a restore of 70.
        assert plan.writes == [] and plan.services[0].reason == "InvalidAnnotation"
        assert key in plan.services[0].message
        assert run(spec(), [bad], [holder(**{TARGET: "70"})], {"r1": reading()}).writes == []


def test_a_huge_annotation_value_makes_a_short_status():
    # A 200,001-character base-target was quoted whole in the status: eight such Services passed
    # etcd's request limit, and every status write of the policy failed.
    v = service_view({"metadata": {"name": "s1", "namespace": "ns",
                                   "annotations": {"kpilot.dev/base-target": "9" * 200_000 + "x"}},
                      "status": {"traffic": [{"revisionName": "r1", "percent": 100}]}})
    out = run(spec(), [v], [holder(**{TARGET: "70"})], {"r1": reading()}).services[0].as_dict("now")
    assert out["reason"] == "InvalidAnnotation" and out["message"] == (
        f"kpilot.dev/base-target='{'9' * 64}'... (200,001 characters) is not a target > 0; "
        "holding the current target")
    # Whatever a message quotes (here a revision's metric annotation), the status keeps at most
    # 1000 characters of it, on the Service and on each revision of a split one.
    split = ServiceView("s1", "ns", False, ("r1", "r2"))
    odd = holder("r1", **{TARGET: "70", "autoscaling.knative.dev/metric": "x" * 200_000})
    plan = run(spec(), [split], [odd, holder("r2", **{TARGET: "70"})], {"r2": reading()})
    out = plan.services[0].as_dict("now")
    first = out["revisionStatus"][0]
    assert first["reason"] == "UnsupportedAutoscaling"
    assert first["message"].startswith("r1: autoscaling metric xxx")
    assert len(first["message"]) == 1000 and len(str(out)) < 3000
    assert len(run(spec(), [SVC], [odd], {}).services[0].as_dict("now")["message"]) == 1000


@pytest.mark.parametrize("value, paused", [("true", True), ("True", True), (" TRUE ", True), ("false", False),
                                           ("False ", False), ("", False)])
def test_the_pause_annotation_is_true_or_false_in_any_case(value, paused):
    v = service_view({"metadata": {"name": "s1", "annotations": {PAUSED: value}}})
    assert (v.paused, v.invalid) == (paused, "")


@pytest.mark.parametrize("value", ["yes", "1", "on", "ture", '"true"'])
@pytest.mark.parametrize("mode", ["Enforce", "Off"])
def test_a_pause_annotation_neither_true_nor_false_holds_the_service_and_says_so(value, mode):
    # Before: anything but "true" read as not paused, without a word: "yes" left the Service managed.
    v = service_view({"metadata": {"name": "s1", "namespace": "ns", "annotations": {PAUSED: value}},
                      "status": {"traffic": [{"revisionName": "r1", "percent": 100}]}})
    owned = holder(**{TARGET: "25", ORIGINAL: "70", OWNER: "p"})
    plan = run(spec(mode=mode), [v], [owned], {"r1": reading()})
    # Held at 25: neither the policy's 40 nor, under Off, a restore of 70 (it may have meant a pause).
    assert plan.writes == [] and plan.services[0].reason == "InvalidAnnotation"
    assert plan.services[0].message == (f"kpilot.dev/paused={value!r} is not 'true' or 'false'; "
                                        "holding the current target" + ("" if mode == "Enforce" else
                                                                        ": not restored until it is fixed"))


def test_retune_leaves_a_service_whose_pause_it_cannot_read_alone():
    from kpilot.retune import Retuned, annotate

    report = annotate([Retuned("s1", 100, 12.0, 0.1)], {"s1": {"kpilot.dev/paused": "yes"}}, "ns", None)
    assert report == [("s1", "kept: kpilot.dev/paused='yes' is not 'true' or 'false'")]


# --- spec, selectors, versions, metrics ---

def test_spec_defaults_and_errors():
    s = parse_spec({"selector": {}, "policy": {"configMap": {"name": "c"}, "sha256": "A" * 64},
                    "metrics": {"prometheus": {"url": "http://p:9090/"}}})
    assert (s.mode, s.interval_s, s.staleness_s, s.source.config_map) == ("DryRun", 30, 120, ("c", "policy.json"))
    assert s.metrics.url == "http://p:9090" and s.source.sha256 == "a" * 64
    assert s.max_step_ratio is None and s.cooldown_s == 0    # the policy's step limit, every decision
    with pytest.raises(SpecError, match="minTarget <= maxTarget"):
        spec(bounds={"minTarget": 10, "maxTarget": 5})
    with pytest.raises(SpecError, match="mode"):
        spec(mode="Sometimes")
    with pytest.raises(SpecError, match="band must be >= 1"):
        spec(band=0.9)
    assert spec(band=2).band == 2 and spec().band is None
    with pytest.raises(SpecError, match="In needs at least one value"):
        spec(selector={"matchExpressions": [{"key": "tier", "operator": "In", "values": []}]})
    # What the API server would refuse on every list (a 400 that read as Knative unreadable, and
    # left Off nothing it could list) is a spec error.
    for selector, why in (({"matchLabels": {"tier": "web api"}}, "'web api' is not a valid label value"),
                          ({"matchLabels": {"bad key": "x"}}, "'bad key' is not a valid label key"),
                          ({"matchLabels": {"Example.com/x": "1"}}, "'Example.com/x' is not a valid label key"),
                          ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a", "-b"]}]},
                           "'-b' is not a valid label value"),
                          ({"matchLabels": {"x": "a" * 64}}, "is not a valid label value")):
        with pytest.raises(SpecError, match=why):
            spec(selector=selector)
    assert spec(selector={"matchLabels": {"app.kubernetes.io/part-of": "shop", "tier": "", "v": "1.2_b-3"},
                          "matchExpressions": [{"key": "kpilot.dev/x", "operator": "Exists"}]}).selector


def test_selector_semantics():
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "In", "values": ["x", "y"]},
                                                           {"key": "c", "operator": "DoesNotExist"}]}
    assert selector_matches(sel, {"a": "1", "b": "y"}) and not selector_matches(sel, {"a": "1", "b": "y", "c": ""})
    assert selector_to_query(sel) == "a=1,b in (x,y),!c"


def test_version_detection_picks_the_write_path():
    assert write_path_for("v1.20.3") == "PodAutoscaler" and write_path_for("1.21.0") == "Revision"
    assert write_path_for("devel") == "Revision" and parse_version("knative-v1.2") is None
    svc = {"status": {"traffic": [{"revisionName": "a", "percent": 90}, {"revisionName": "b", "percent": 0},
                                  {"revisionName": "c", "percent": 10, "tag": "x"}]}}
    assert traffic_revisions(svc) == ("a", "c")


def test_prometheus_queries_are_fixed_and_namespace_scoped():
    assert QUERIES_PER_TICK == 9
    assert all('k8s_namespace_name="ns"' in promql(f, "ns", 30) for f in QUERIES)
    # The series the observation contract names (kpilot.observation), the queue-proxy counters'
    # growth over the decision interval (30 s at least) / its seconds, and the p95.
    sel = 'k8s_namespace_name="shop"'
    assert promql("concurrency_stable", "shop", 45) == f"max by (kn_revision_name) (kn_revision_concurrency_stable{{{sel}}})"
    assert promql("desired_pods", "shop", 45) == f"max by (kn_revision_name) (kn_revision_pods_desired{{{sel}}})"
    # Growth = each series' latest sample now less its latest one a window earlier: rate() needed
    # two samples in the window and read half the rate at a 20 s scrape, 0 at 30 s (promtool:
    # tests/test_promql_promtool.py). Latest within 5 minutes (twice a longer window), a range
    # lookback: one failed scrape's staleness marker made an instant `offset` read a 100,000-request
    # pod as new.
    count = f"kn_serving_invocation_duration_seconds_count{{{sel}}}"
    now, before = f"last_over_time({count}[300s])", f"last_over_time({count}[300s] offset 45s)"
    # A series with no sample in the lookback a window ago (a new pod: what it served before its
    # first scrape) or with a sample in the window lower than the one before it (a restarted
    # queue-proxy) is counted from zero, by its latest value.
    restarted = f"resets({count}[45s]) > 0 or min_over_time({count}[45s]) < {before}"
    assert promql("request_rate", "shop", 45) == (
        f"sum by (kn_revision_name) (((({now} - {before}) unless ({restarted})) or {now})) / 45")
    bucket = f"kn_serving_invocation_duration_seconds_bucket{{{sel}}}"
    now, before = f"last_over_time({bucket}[1200s])", f"last_over_time({bucket}[1200s] offset 600s)"
    restarted = f"resets({bucket}[600s]) > 0 or min_over_time({bucket}[600s]) < {before}"
    assert promql("latency_p95_s", "shop", 600) == (
        f"histogram_quantile(0.95, sum by (kn_revision_name, le) (((({now} - {before}) unless ({restarted}))"
        f" or {now})))")
    assert "[300s] offset 30s)" in promql("latency_sum_rate", "shop", 10)    # 30 s at least
    series = {f: {} for f in QUERIES}
    for f in ("concurrency_stable", "concurrency_panic", "ready_pods", "desired_pods", "panic"):
        series[f] = {"r1": 2.0, "r2": 1.0}
    del series["panic"]["r2"]
    series["desired_pods"]["r1"] = 5.0
    series["request_rate"] = {"r1": 4.0}
    series["latency_sum_rate"] = {"r1": 2.0}
    out = assemble(series)
    assert set(out) == {"r1"} and out["r1"]["starting_pods"] == 3 and out["r1"]["latency_mean_s"] == 0.5


def test_a_reading_prometheus_cannot_give_is_no_observation_not_zero_load():
    from kpilot_operator.reconcile import usable

    series = {f: {"r1": 2.0} for f in QUERIES}
    series["latency_p95_s"] = {"r1": math.nan}           # no request in the window: 0, as simulated
    series["request_rate"] = {"r1": math.inf}            # a broken reading: held (it read as 0 req/s)
    reading = assemble(series)["r1"]
    assert reading["latency_p95_s"] == 0.0 and not usable(reading, now=0.0, staleness_s=60.0)
    series["request_rate"] = {"r1": 4.0}
    assert usable(assemble(series)["r1"], now=0.0, staleness_s=60.0)


# --- peering ---

def test_each_replica_draws_its_own_peering_priority(monkeypatch):
    from kpilot.errors import ConfigError
    from kpilot_operator.main import PRIORITY_ENV, peering_priority

    monkeypatch.delenv(PRIORITY_ENV, raising=False)
    draws = {peering_priority() for _ in range(20)}
    assert len(draws) == 20 and min(draws) >= 1          # never Kopf's default 0, never a tie
    assert peering_priority(666) == 666                   # one given to Kopf (e.g. --dev) is kept
    monkeypatch.setenv(PRIORITY_ENV, "42")
    assert peering_priority() == 42 == peering_priority(666)
    monkeypatch.setenv(PRIORITY_ENV, "high")
    with pytest.raises(ConfigError, match="KPILOT_PEERING_PRIORITY"):
        peering_priority()


def test_a_bad_peering_priority_is_one_line_before_the_operator_starts():
    import os
    import subprocess
    import sys
    from pathlib import Path

    kpilot = Path(sys.executable).with_name("kpilot")
    proc = subprocess.run([str(kpilot), "operator", "run", "--no-standalone"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "KPILOT_PEERING_PRIORITY": "high"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["kpilot: error: environment variable KPILOT_PEERING_PRIORITY: "
                                                "expected an integer, got 'high'"]



def test_a_namespace_pattern_with_peering_is_one_line_before_the_operator_starts():
    # Replicas of a namespaced operator coordinate through a KopfPeering per namespace, created at
    # startup: a pattern's namespaces cannot be known then.
    import subprocess
    import sys
    from pathlib import Path

    kpilot = Path(sys.executable).with_name("kpilot")
    proc = subprocess.run([str(kpilot), "operator", "run", "--no-standalone", "-n", "team-a", "-n", "team-*"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "kpilot: error: option --namespace: 'team-*' with --no-standalone: replicas coordinate through a "
        "KopfPeering in each namespace they serve, so name each namespace (no patterns)"]


@pytest.mark.parametrize("name, value, expected", [
    ("KPILOT_METRICS_PORT", "http", "expected an integer, got 'http'"),
    ("KPILOT_METRICS_PORT", "70000", "expected an integer from 0 to 65535, got '70000'"),
    ("KPILOT_TIMER_RESOLUTION_S", "nan", "expected a number from 0.01 to 3600, got 'nan'"),
    ("KPILOT_WATCH_TIMEOUT_S", "5m", "expected an integer, got '5m'"),
    # Kopf's "Unsupported scheme" came as a 78-line traceback once the operator had started.
    ("KPILOT_HEALTH_ENDPOINT", "notaurl", "expected an http:// URL with a path such as "
                                          "http://0.0.0.0:8081/healthz, got 'notaurl'"),
    ("KPILOT_HEALTH_ENDPOINT", "http://0.0.0.0:99999/healthz", "expected an http:// URL with a path"),
])
def test_a_bad_numeric_setting_is_one_line_before_the_operator_starts(name, value, expected):
    import os
    import subprocess
    import sys
    from pathlib import Path

    kpilot = Path(sys.executable).with_name("kpilot")
    proc = subprocess.run([str(kpilot), "operator", "run"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, name: value})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"kpilot: error: environment variable {name}: {expected}")

def test_no_credentials_is_one_line_before_the_operator_starts(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    # Kopf's startup used to fail with two tracebacks and exit 1.
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(tmp_path / "none")
    kpilot = Path(sys.executable).with_name("kpilot")
    proc = subprocess.run([str(kpilot), "operator", "run", "-n", "apps"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("kpilot: error: no Kubernetes credentials: neither a ServiceAccount nor a kubeconfig")
    assert f"(kubeconfig {tmp_path / 'none'}: " in line        # which file it looked for


def test_without_prometheus_concurrency_is_inverted_at_the_revisions_utilization():
    import asyncio

    from kpilot_operator.metrics import PodAutoscalerMetrics
    from kpilot_operator.annotations import UTILIZATION

    # desiredScale = ceil(concurrency / (target x utilization)): 4 pods at target 10 mean at most
    # 28 requests at Knative's default 70 %, 40 at a revision's own 100 %.
    pas = [{"metadata": {"name": n}, "status": {"desiredScale": 4, "actualScale": 3}} for n in ("r1", "r2", "r3")]
    holders = {"r1": Holder("Revision", "ns", "r1", "s1", "1", {TARGET: "10"}),
               "r2": Holder("Revision", "ns", "r2", "s1", "1", {TARGET: "10", UTILIZATION: "100"}),
               "r3": Holder("Revision", "ns", "r3", "s1", "1", {TARGET: "10", UTILIZATION: "nope"})}
    seen = asyncio.run(PodAutoscalerMetrics().read("ns", 30.0, holders, pas))
    assert {n: r["concurrency_stable"] for n, r in seen.items()} == pytest.approx({"r1": 28.0, "r2": 40.0, "r3": 28.0})


def test_without_prometheus_a_revision_the_autoscaler_has_no_metrics_for_has_no_reading():
    import asyncio

    from kpilot_operator.metrics import PodAutoscalerMetrics

    # Knative's PodAutoscaler says desiredScale -1 until its autoscaler has metrics (a new
    # revision): read as -28 requests in flight, the policy was fed a load it never trained on.
    pas = [{"metadata": {"name": "new"}, "status": {"desiredScale": -1, "actualScale": 1}},
           {"metadata": {"name": "old"}, "status": {"desiredScale": 2, "actualScale": 2}}]
    holders = {n: Holder("Revision", "ns", n, "s1", "1", {TARGET: "10"}) for n in ("new", "old")}
    seen = asyncio.run(PodAutoscalerMetrics().read("ns", 30.0, holders, pas))
    assert set(seen) == {"old"} and seen["old"]["concurrency_stable"] == pytest.approx(14.0)
    # Without a reading it holds its target, then falls back, as with any missing reading.
    plan = run(spec(), [SVC], [holder(**{TARGET: "70"})], {})
    assert plan.services[0].reason == "MetricsStaleHolding" and not plan.writes


def test_the_fallback_is_written_in_one_step_past_the_step_limit_and_cooldown():
    # Owned at 100, changed a moment ago, a x1.5 step limit and a 10-minute cooldown: a blind
    # revision still goes straight to its fallback, within the bounds.
    h = holder(**{TARGET: "100", ORIGINAL: "70", OWNER: "p", CHANGED_AT: f"{NOW - 5:.0f}"})
    sp = spec(fallbackTarget=5, staleAfterSeconds=30, maxStepRatio=0.5, cooldownSeconds=600)
    fb = run(sp, [SVC], [h], {}, last_fresh={"r1": NOW - 31})
    assert fb.services[0].reason == "Fallback" and [w.target for w in fb.writes] == [5]
    # A live decision under the same guardrails is held by the cooldown.
    assert run(sp, [SVC], [h], {"r1": reading()}).services[0].reason == "Cooldown"
    # Below the spec's minimum, the fallback is the minimum.
    low = run(spec(fallbackTarget=1, staleAfterSeconds=30), [SVC], [h], {}, last_fresh={"r1": NOW - 31})
    assert [w.target for w in low.writes] == [2]


def test_switching_to_dry_run_leaves_applied_targets_in_place():
    # Enforce applied 40 (original 70); in DryRun nothing is written, not even the restore of a
    # Service that left the selector: Off restores.
    owned = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p"})
    at_25 = holder(**{TARGET: "25", ORIGINAL: "70", OWNER: "p"})   # Enforce would move it to 40
    assert run(spec(), [SVC], [at_25], {"r1": reading()}).writes
    assert run(spec(mode="DryRun"), [SVC], [at_25], {"r1": reading()}).writes == []
    assert run(spec(mode="DryRun"), [], [owned], {}).writes == []
    off = run(spec(mode="Off"), [SVC], [owned], {})
    assert isinstance(off.writes[0].intent, Restore) and off.writes[0].target == 70


@pytest.mark.parametrize("annotation", [None, 0.5, 5.0, 70.0, 250.0])
@pytest.mark.parametrize("container_concurrency", [0, 10])
@pytest.mark.parametrize("default", [100.0, 20.0, 5.0])
def test_the_operator_and_the_simulator_resolve_a_target_alike(annotation, container_concurrency, default):
    # Three places resolve Knative's target: the operator (what a revision runs), the simulator's
    # configuration (what the policy observes) and its compiled engine (what the KPA scales on).
    import numpy as np

    from kpilot.sim.batch import Batch
    from kpilot.sim.config import KpaConfig, PodConfig, SimConfig
    from kpilot.traces.model import make_trace

    annotations = {} if annotation is None else {TARGET: f"{annotation:g}"}
    operator = Holder("Revision", "ns", "r1", "s1", "1", annotations, default, float(container_concurrency)).current_target
    kpa = KpaConfig(container_concurrency_target_default=default)
    config = kpa.total_value(annotation, container_concurrency)
    sim = SimConfig(kpa=kpa, pod=PodConfig(container_concurrency=container_concurrency, cold_start="instant"))
    batch = Batch(1, sim, max_requests=1, record=True, max_ticks=8)
    batch.reset(0, make_trace([1.0], [1.0]), seed=0, target=annotation)
    batch.advance(5.0)
    engine = batch.timeline[0, 1, 4]             # the target of the decider's tick at 2 s
    observed = batch.raw_observation(30.0)["target"][0]
    assert operator == config == engine == observed
    # Knative (pkg/reconciler/autoscaling/resources/target.go): containerConcurrency, else the
    # cluster's default; an annotation replaces it, capped by containerConcurrency.
    base = container_concurrency or default
    expected = base if annotation is None else (min(annotation, container_concurrency) if container_concurrency
                                                else annotation)
    assert np.isclose(operator, expected)


# --- found by a review (session 16) ---

@pytest.mark.parametrize("ratio", [0.01, 0.02, 0.0204])
def test_a_step_limit_under_the_deadband_still_moves_the_target(ratio):
    """The deadband (2 %) once applied after the step limit: any limit under 2 % froze every target."""
    down = guardrails.guard(previous=100, proposed=40, min_target=2, max_target=150, max_step_ratio=ratio,
                            cooldown_s=0, last_change_at=None, now=NOW)
    assert down.changed and down.reason == "StepLimited" and down.target == pytest.approx(100 / (1 + ratio), abs=0.01)
    up = guardrails.guard(previous=20, proposed=40, min_target=2, max_target=150, max_step_ratio=ratio,
                          cooldown_s=0, last_change_at=None, now=NOW)
    assert up.changed and up.target == pytest.approx(20 * (1 + ratio), abs=0.01)


def test_a_cooldown_of_one_interval_skips_no_decision():
    """changed-at was rounded to the nearest second: a change at +0.7 s read as +1 s, and the
    next tick, one interval later, found itself in the cooldown."""
    delta = annotation_delta({TARGET: "70"}, Assert("40", "p", NOW + 0.7))
    assert delta[CHANGED_AT] == f"{NOW:.0f}"
    changed = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p", CHANGED_AT: delta[CHANGED_AT]})
    g = guardrails.guard(previous=40, proposed=20, min_target=2, max_target=150, max_step_ratio=10, cooldown_s=10,
                         last_change_at=changed.last_change_at, now=NOW + 10.0)
    assert g.changed and g.reason == "Applied"


def test_an_unreadable_original_is_put_back_as_written_without_stopping_the_policy():
    """float('0x1p4') failed inside decide() and stopped every Service of the policy, Off
    included; Knative (Go's ParseFloat) reads it as 16."""
    odd = holder("r9", "s9", **{TARGET: "40", ORIGINAL: "0x1p4", OWNER: "p"})
    garbled = holder("r8", "s8", **{TARGET: "40", ORIGINAL: "lots", OWNER: "p"})
    managed = holder(**{TARGET: "40", ORIGINAL: "70", OWNER: "p"})
    for mode in ("Enforce", "Off"):
        plan = run(spec(mode=mode), [SVC], [managed, odd, garbled], {"r1": reading()})
        restored = {w.holder.name: w for w in plan.writes if isinstance(w.intent, Restore)}
        assert restored["r9"].target == 16.0 and restored["r8"].target == 100.0   # unreadable: Knative's default
        assert annotation_delta(odd.annotations, Restore())[TARGET] == "0x1p4"
    assert holder(**{TARGET: "0x1p4"}).current_target == 16.0
    assert holder(**{TARGET: "ff"}).current_target == 100.0          # Go refuses hex without 0x


def test_off_leaves_a_paused_services_hand_set_target_alone():
    paused = ServiceView("s1", "ns", True, ("r1",))
    hand_set = holder(**{TARGET: "55", ORIGINAL: "70", OWNER: "p"})
    other = holder("r2", "s2", **{TARGET: "40", ORIGINAL: "absent", OWNER: "p"})
    plan = run(spec(mode="Off"), [paused, ServiceView("s2", "ns", False, ("r2",))], [hand_set, other], {})
    assert [w.holder.name for w in plan.writes] == ["r2"]
    assert plan.services[0].reason == "Paused" and "not restored" in plan.services[0].message
    assert plan.services[1].reason == "Off"
    # Lifting the pause while Off restores it on the next tick.
    plan = run(spec(mode="Off"), [SVC], [hand_set], {})
    assert [(w.holder.name, w.target) for w in plan.writes] == [("r1", 70.0)]


def test_targets_are_written_with_both_decimals_and_a_band_that_two_decimals_cannot_hold_is_stable():
    assert guardrails.format_target(12345.67) == "12345.67" and guardrails.format_target(99999.99) == "99999.99"
    assert guardrails.format_target(7.5) == "7.5" and guardrails.format_target(40) == "40"
    # A band pinned on 6.666 runs 6.67; the next tick must not "pull it in" to 6.67 again.
    pinned = ServiceView("s1", "ns", False, ("r1",), base_target=6.666, band=1.0)
    first = run(spec(), [pinned], [holder()], {"r1": reading()})
    assert [w.target for w in first.writes] == [6.67]
    again = run(spec(), [pinned], [holder(**{TARGET: "6.67", ORIGINAL: "absent", OWNER: "p"})], {"r1": reading()})
    assert again.writes == [] and again.services[0].reason == "WithinDeadband"
    # A target truly outside the bounds is still pulled in, however close.
    g = guardrails.guard(previous=0.996, proposed=0.996, min_target=1, max_target=150, max_step_ratio=10,
                         cooldown_s=0, last_change_at=None, now=NOW)
    assert g.changed and g.target == 1.0


@pytest.mark.parametrize("over, expect", [
    ({"metrics": {"prometheus": {"url": "http://p:9090", "timeoutSeconds": 0}}}, "timeoutSeconds must be positive"),
    ({"fallbackTarget": 0}, "fallbackTarget must be positive"),
])
def test_zeros_the_schema_cannot_catch_are_spec_errors(over, expect):
    """The API server compares an integer 0 against a minimum truncated to 0; aiohttp reads a
    timeout of 0 as none, so a Prometheus that never answers would hang the tick."""
    with pytest.raises(SpecError, match=expect):
        spec(**over)


def test_every_annotation_written_on_a_holder_is_one_knative_keeps_off_the_pods():
    # Knative copies a Revision's annotations onto its Deployment's pod template, all but the
    # autoscaling.knative.dev/ ones (pkg/reconciler/revision/resources/meta.go): a kpilot.dev/ key
    # written there changed the template and restarted the revision's pods on every write.
    holders = [{TARGET: "70"}, {}, {TARGET: "40", ORIGINAL: "70", OWNER: "p", CHANGED_AT: "1"}]
    for annotations in holders:
        for intent in (Assert("40", "p", NOW), Assert("12.5", "p", NOW + 60), Restore()):
            written = [k for k, v in annotation_delta(annotations, intent).items() if v is not None]
            assert all(k.startswith("autoscaling.knative.dev/") for k in written), written


def test_holders_written_by_an_earlier_version_are_read_and_moved():
    from kpilot_operator.annotations import LEGACY

    old = {TARGET: "40", LEGACY[ORIGINAL]: "70", LEGACY[OWNER]: "p", LEGACY[CHANGED_AT]: f"{NOW - 5:.0f}"}
    h = holder(**old)
    assert (h.owner, h.original, h.last_change_at) == ("p", "70", NOW - 5)
    # The next write moves the bookkeeping, keeping the original and the change time.
    moved = annotation_delta(old, Assert("40", "p", NOW))
    assert moved == {ORIGINAL: "70", OWNER: "p", CHANGED_AT: f"{NOW - 5:.0f}",
                     LEGACY[ORIGINAL]: None, LEGACY[OWNER]: None, LEGACY[CHANGED_AT]: None}
    # Restoring puts the original back and removes both sets of keys.
    assert annotation_delta(old, Restore()) == {TARGET: "70", ORIGINAL: None, OWNER: None, CHANGED_AT: None,
                                                LEGACY[ORIGINAL]: None, LEGACY[OWNER]: None,
                                                LEGACY[CHANGED_AT]: None}
    # Another policy's legacy claim is respected.
    assert annotation_delta(old, Assert("30", "q", NOW)) == {}


def test_holding_on_stale_metrics_moves_a_target_outside_a_new_band_inside():
    # The Service's base target went from ~3 to 100 (band 1) while its metrics were stale: holding
    # kept 3, outside the new bounds, for up to staleAfterSeconds, saying nothing.
    svc = ServiceView("s1", "ns", False, ("r1",), base_target=100, band=1)
    h = holder(**{TARGET: "3", ORIGINAL: "70", OWNER: "p"})
    sp = spec(staleAfterSeconds=120)
    plan = run(sp, [svc], [h], {}, last_fresh={"r1": NOW - 60})
    assert plan.services[0].reason == "MetricsStaleHolding" and [w.target for w in plan.writes] == [100]
    assert "moved inside the bounds to 100" in plan.services[0].message
    dry = run(spec(staleAfterSeconds=120, mode="DryRun"), [svc], [h], {}, last_fresh={"r1": NOW - 60})
    assert dry.writes == [] and "would move inside the bounds to 100" in dry.services[0].message
    # Inside the bounds, holding holds.
    inside = run(sp, [ServiceView("s1", "ns", False, ("r1",), base_target=3, band=1.5)], [h], {},
                 last_fresh={"r1": NOW - 60})
    assert inside.writes == [] and inside.services[0].reason == "MetricsStaleHolding"


@pytest.mark.parametrize("status, why", [(403, "not granted"), (404, "not found")])
def test_an_unreadable_autoscaler_config_says_its_windows_are_assumed(status, why):
    import asyncio

    from kpilot_operator.knative import KnativeCluster
    from kpilot_operator.kube import ApiError

    class NoConfigMap:
        async def get_configmap(self, namespace, name):
            raise ApiError(status, "configmaps \"config-autoscaler\"")

    info = asyncio.run(KnativeCluster(NoConfigMap(), version_override="1.23.0").knative())
    assert info.cluster_autoscaling == {} and info.default_target == 100
    assert info.default_target_source == (f"assumed (Knative's default): config-autoscaler {why}, so its "
                                          "windows are assumed Knative's too")


@pytest.mark.parametrize("data, source", [
    ({"_example": "container-concurrency-target-default: 100"},        # a stock install
     "config-autoscaler does not set container-concurrency-target-default: Knative's default, 100"),
    ({"container-concurrency-target-default": "lots"},
     "config-autoscaler has an unusable container-concurrency-target-default ('lots'); assumed Knative's "
     "default, 100"),
])
def test_a_stock_autoscaler_config_reads_as_knatives_default_not_as_a_fault(data, source):
    # Both read "has no usable container-concurrency-target-default": a fault on every stock cluster.
    import asyncio

    from kpilot_operator.knative import KnativeCluster

    class StockConfigMap:
        async def get_configmap(self, namespace, name):
            return {"data": data}

    info = asyncio.run(KnativeCluster(StockConfigMap(), version_override="1.23.0").knative())
    assert info.default_target == 100 and info.default_target_source == source


def test_the_clusters_utilization_applies_where_a_revision_sets_none():
    from kpilot_operator.knative import cluster_autoscaling_from

    cluster = cluster_autoscaling_from({"data": {"container-concurrency-target-percentage": "50"}})
    assert Holder("Revision", "ns", "r1", "s1", "1", {}, cluster_autoscaling=cluster).utilization == 0.5
    own = {"autoscaling.knative.dev/target-utilization-percentage": "80"}
    assert Holder("Revision", "ns", "r1", "s1", "1", own, cluster_autoscaling=cluster).utilization == 0.8
    assert Holder("Revision", "ns", "r1", "s1", "1", {}).utilization == 0.7


def test_a_utilization_other_than_the_trained_one_is_unsupported_autoscaling():
    from kpilot_operator.annotations import UTILIZATION
    from kpilot_operator.knative import cluster_autoscaling_from

    # The policy trained at Knative's default 70 % (the key absent from its manifest reads so too).
    cluster = cluster_autoscaling_from({"data": {"container-concurrency-target-percentage": "100"}})
    at_100 = Holder("Revision", "ns", "r1", "s1", "1", {TARGET: "70"}, cluster_autoscaling=cluster)
    plan = run(spec(), [SVC], [at_100], {"r1": reading()})
    assert plan.writes == [] and plan.services[0].reason == "UnsupportedAutoscaling"
    assert plan.services[0].message == ("r1: config-autoscaler's container-concurrency-target-percentage "
                                        "100: the policy was trained with a target utilization of 70 %")
    # config-autoscaler also takes a fraction in (0, 1]: "0.7" is Knative's 70 %, and "1" is 100 %.
    fraction = cluster_autoscaling_from({"data": {"container-concurrency-target-percentage": "0.7"}})
    at_fraction = replace(at_100, cluster_autoscaling=fraction)
    assert at_fraction.utilization == 0.7 and run(spec(), [SVC], [at_fraction], {"r1": reading()}).writes
    whole = cluster_autoscaling_from({"data": {"container-concurrency-target-percentage": "1"}})
    assert replace(at_100, cluster_autoscaling=whole).utilization == 1.0
    own = replace(at_100, annotations={TARGET: "70", UTILIZATION: "70"})      # the revision's own wins
    assert run(spec(), [SVC], [own], {"r1": reading()}).writes[0].target == 40

    # A policy trained at 100 %: where nothing is set, Knative runs its 70 %.
    trained = {"manifest": {"simulator": {"kpa": {"container_concurrency_target_percentage": 100.0}}}}
    policy = replace(POLICY, manifest={**POLICY.manifest, **trained})

    def decided(h):
        return decide(policy_name="p", spec=spec(), services=[SVC], holders={"r1": h},
                      readings={"r1": reading()}, policy=policy, last_fresh={}, now=NOW)

    plan = decided(holder(**{TARGET: "70"}))
    assert plan.writes == [] and plan.services[0].message == (
        f"r1: Knative's default 70 (neither {UTILIZATION} nor config-autoscaler's "
        "container-concurrency-target-percentage is set): the policy was trained with a target "
        "utilization of 100 %")
    assert decided(at_100).writes[0].target == 40


def test_a_policy_trained_on_other_windows_is_refused_where_knative_runs_its_defaults():
    # Trained on a 120 s stable window: a revision where nothing sets one runs Knative's 60 s.
    trained = {"manifest": {"simulator": {"kpa": {"stable_window_s": 120.0}}}}
    policy = replace(POLICY, manifest={**POLICY.manifest, **trained})
    plan = decide(policy_name="p", spec=spec(), services=[SVC], holders={"r1": holder(**{TARGET: "70"})},
                  readings={"r1": reading()}, policy=policy, last_fresh={}, now=NOW)
    assert plan.writes == [] and plan.services[0].reason == "UnsupportedAutoscaling"
    assert plan.services[0].message == (
        "r1: Knative's default 60 (neither autoscaling.knative.dev/window nor config-autoscaler's "
        "stable-window is set): the policy observes concurrency averaged over the 120 s stable window it "
        "was trained with")
    windowed = holder(**{TARGET: "70", "autoscaling.knative.dev/window": "2m"})
    assert decide(policy_name="p", spec=spec(), services=[SVC], holders={"r1": windowed},
                  readings={"r1": reading()}, policy=policy, last_fresh={}, now=NOW).writes[0].target == 40


# --- logs ---

def test_the_timers_per_second_success_line_is_dropped_at_info_and_kept_with_verbose(caplog):
    # 86,400 "Timer 'decide_and_apply' succeeded." lines a day per policy, and one access line a probe.
    import logging

    import kopf

    from kpilot_operator import handlers
    from kpilot_operator.main import quiet_routine_logs

    # Kopf's own wording for a timer handler that returned (kopf._core.actions.execution).
    registered = [h for h in kopf.get_default_registry()._spawning.get_all_handlers()
                  if getattr(h.fn, "__name__", "") == handlers.decide_and_apply.__name__]
    assert [f"{h} succeeded." for h in registered] == ["Timer 'decide_and_apply' succeeded."]
    objects, access = logging.getLogger("kopf.objects"), logging.getLogger("aiohttp.access")
    level = access.level
    assert quiet_routine_logs(verbose=True) is None
    routine = quiet_routine_logs(verbose=False)
    try:
        with caplog.at_level(logging.INFO):
            objects.info("Timer 'decide_and_apply' succeeded.")
            objects.info("Handler 'restore_on_delete' succeeded.")
            objects.warning("Timer 'decide_and_apply' failed temporarily: Knative objects unreadable")
            access.info('127.0.0.1 "GET /healthz HTTP/1.1" 200')
        assert [r.getMessage() for r in caplog.records] == [
            "Handler 'restore_on_delete' succeeded.",
            "Timer 'decide_and_apply' failed temporarily: Knative objects unreadable"]
    finally:
        objects.removeFilter(routine)
        access.setLevel(level)


def test_peerings_a_namespace_not_there_yet_waits_and_another_failure_is_retried_whole():
    import asyncio
    import logging

    from kpilot_operator.kube import ApiError, PeeringUnavailable, ensure_peerings

    class Api:
        def __init__(self, failures):
            self.failures, self.created = failures, []

        async def ensure_peering(self, name, namespace=None):
            if namespace in self.failures:
                raise self.failures[namespace]
            self.created.append(namespace)
            return True

    log = logging.getLogger("test")
    later = Api({"later": ApiError(404, 'namespaces "later" not found')})
    assert asyncio.run(ensure_peerings(later, "kpilot", ["a", "later", "b"], log)) == ["later"]
    assert later.created == ["a", "b"]           # one missing namespace does not hold up the others
    denied = Api({None: ApiError(403, "clusterkopfpeerings is forbidden")})
    with pytest.raises(PeeringUnavailable, match="cannot create the ClusterKopfPeering kpilot: HTTP 403"):
        asyncio.run(ensure_peerings(denied, "kpilot", [None], log))



class _LosesTheFirstAnswer:
    """A revision's API that applies the first patch and loses its answer; then `meanwhile` runs."""

    def __init__(self, annotations, meanwhile=None):
        self.obj = {"metadata": {"name": "r1", "namespace": "ns", "resourceVersion": "1",
                                 "annotations": dict(annotations)}}
        self.meanwhile, self.calls = meanwhile, []

    async def get_object(self, *ref):
        self.calls.append("GET")
        return copy.deepcopy(self.obj)

    async def json_patch(self, *args):
        import jsonpatch

        from kpilot_operator.kube import ApiError

        self.calls.append("PATCH")
        try:
            new = jsonpatch.apply_patch(self.obj, args[-1])      # its resourceVersion test included
        except jsonpatch.JsonPatchTestFailed:
            raise ApiError(409, "the object has been modified") from None
        new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
        self.obj = new
        if self.calls.count("PATCH") == 1:
            if self.meanwhile:
                self.meanwhile(self.obj)
            raise ApiError(0, "Connection reset by peer")
        return new


def test_a_write_whose_answer_was_lost_counts_as_written_when_it_was_applied():
    # The API server applied the patch and the answer never came; its retry met that change as a
    # conflict, and the write was reported "not written: the revision changed", with no
    # TargetApplied Event, though the target it set was there.
    from kpilot_operator.annotations import Assert, Holder
    from kpilot_operator.knative import KnativeCluster

    holder = Holder("Revision", "ns", "r1", "s1", "1", {TARGET: "70"})
    api = _LosesTheFirstAnswer({TARGET: "70"})
    written = asyncio.run(KnativeCluster(api, version_override="1.23.0", backoff_s=0.001)
                          .write(holder, Assert("40", "pol", 1e6, expected="70")))
    assert written is True and api.calls == ["PATCH", "PATCH", "GET"]
    assert api.obj["metadata"]["annotations"][TARGET] == "40"

    # A change someone made after it is theirs: not written, and theirs stays.
    def someone_sets_55(obj):
        obj["metadata"]["annotations"][TARGET] = "55"
        obj["metadata"]["resourceVersion"] = "9"

    api = _LosesTheFirstAnswer({TARGET: "70"}, meanwhile=someone_sets_55)
    written = asyncio.run(KnativeCluster(api, version_override="1.23.0", backoff_s=0.001)
                          .write(holder, Assert("40", "pol", 1e6, expected="70")))
    assert written is False and api.obj["metadata"]["annotations"][TARGET] == "55"


def test_a_patch_refused_again_and_again_backs_off(monkeypatch):
    # An admission webhook refusing every patch (422): re-read and re-patched five times, at once.
    from kpilot_operator import knative
    from kpilot_operator.annotations import Assert, Holder
    from kpilot_operator.knative import KnativeCluster, WriteFailed
    from kpilot_operator.kube import ApiError

    class Refusing:
        async def get_object(self, *ref):
            return {"metadata": {"resourceVersion": "1", "annotations": {TARGET: "70"}}}

        async def json_patch(self, *args):
            raise ApiError(422, "admission webhook denied the request")

    waits = []

    async def sleep(seconds):
        waits.append(seconds)
    monkeypatch.setattr(knative.asyncio, "sleep", sleep)
    holder = Holder("Revision", "ns", "r1", "s1", "1", {TARGET: "70"})
    with pytest.raises(WriteFailed, match="admission webhook denied"):
        asyncio.run(KnativeCluster(Refusing(), version_override="1.23.0", backoff_s=0.2)
                    .write(holder, Assert("40", "pol", 1e6, expected="70")))
    assert waits == [0.2, 0.4, 0.8, 1.6]          # the first conflict retried at once, then backing off
