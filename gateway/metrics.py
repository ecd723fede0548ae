"""Prometheus metrics: what the gateway did, counted with bounded labels, served at ``/metrics``.

One ``CollectorRegistry`` per app (never the process-global one), so two apps in one process, as in tests,
count separately. ``Metrics`` is a ``runtime.Observer`` (events, decisions, consent changes), the
dispatcher's ``on_result`` (delivery latency and outcome) and the shadow's ``on_difference``.

Labels take only values from closed sets: event types, platform names, actions, reason codes, destination
ids and channel names come from code or from the operator's policy. Meeting ids, participant ids, names and
text are never labels (unbounded cardinality, and personal data).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, get_args

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from gateway.delivery.items import Item, Result
from gateway.events import MeetingEvent
from gateway.model import ConsentRecord, Decision
from gateway.policy.schema import Channel
from gateway.runtime import Result as EventResult

_CHANNELS = frozenset(get_args(Channel))
_Metric = TypeVar("_Metric", Counter, Histogram)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _event_type(event: MeetingEvent) -> str:
    return type(event).__name__


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "gateway_events", "Meeting events handled", ["type", "platform", "status"], registry=r
        )
        self.decisions = Counter(
            "gateway_decisions", "Segment decisions logged", ["action", "reason"], registry=r
        )
        self.consent = Counter(
            "gateway_consent_changes", "Consent records written", ["choice", "outcome", "channel"], registry=r
        )
        self.delivery = Histogram(
            "gateway_delivery_latency_seconds",
            "From hand-over to delivery until the item's outcome",
            ["destination", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow = Counter(
            "gateway_shadow_differences",
            "Shadow-policy decisions that differ from the active ones",
            ["active", "shadow"],
            registry=r,
        )
        self.reloads = Counter("gateway_policy_reloads", "Policy reload attempts", ["outcome"], registry=r)
        self.outbox_depth = Gauge("gateway_outbox_depth", "Delivery items not yet finished", registry=r)
        self.outbox_oldest = Gauge(
            "gateway_outbox_oldest_age_seconds", "Age of the oldest unfinished delivery item", registry=r
        )
        # ``labels()`` takes a lock and checks its arguments on every call (~1 µs; three calls a segment).
        # The label sets are closed (see the module docstring), so each child is looked up once and kept.
        self._children: dict[tuple[object, ...], Any] = {}  # each value is its key's metric's child

    def _child(self, metric: _Metric, *labels: str) -> _Metric:
        key = (metric, *labels)
        child: _Metric | None = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- runtime.Observer -----------------------------------------------------------------------------

    def on_event(self, platform: str, event: MeetingEvent, result: EventResult) -> None:
        self._child(self.events, _event_type(event), platform, result.status).inc()

    def on_decisions(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            # a reason's ":<count>" ("names_scrubbed_at_send:2") is no label: one series per count
            reason = decision.reasons[0].split(":", 1)[0] if decision.reasons else "none"
            self._child(self.decisions, decision.action._value_, reason).inc()  # _value_: no descriptor call

    def on_consent(self, record: ConsentRecord) -> None:
        # a refused request may name any channel: only the policy's closed set becomes a label
        channel = record.channel if record.channel in _CHANNELS else "other"
        self.consent.labels(record.choice.value, record.outcome.value, channel).inc()

    # --- delivery and shadow --------------------------------------------------------------------------

    def on_delivery(self, item: Item, result: Result) -> None:
        self._child(self.delivery, item.destination, str(result.status)).observe(result.latency)

    def on_shadow_difference(self, shadow: Decision, active: Decision | None) -> None:
        self.shadow.labels(active.action.value if active else "none", shadow.action.value).inc()

    def on_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()

    def track_outbox(self, depth: Callable[[], float], oldest_age: Callable[[], float]) -> None:
        """Read the dispatcher's figures at scrape time."""
        self.outbox_depth.set_function(depth)
        self.outbox_oldest.set_function(oldest_age)

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
