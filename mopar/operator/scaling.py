"""Autoscaling settings of a model's functions (pure): what the spec asks for, and what each
serving path makes of it.

Knative's KPA scales on requests (`concurrency`, `rps`); its HPA class and a plain
HorizontalPodAutoscaler on resources (`cpu`, `memory`, as a percentage of the pod's request).
A metric left unset means concurrency on Knative and cpu without it; a request metric on the
Deployment path has no autoscaler to read it, so it is a spec error there.
Bounds are Knative's (knative/serving v1.23.0 `pkg/apis/autoscaling/annotation_validation.go`:
int32 scales, a target of at least 0.01, scale-down-delay at most `WindowMax`, one hour).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mopar.errors import SpecError
from mopar.operator import fields

KNATIVE = "knative"
DEPLOYMENT = "deployment"
REQUEST_METRICS = ("concurrency", "rps")
RESOURCE_METRICS = ("cpu", "memory")
METRICS = REQUEST_METRICS + RESOURCE_METRICS
# Targets when the spec gives none: one request at a time per slice (a worker runs one at a
# time), 70 % of the requested CPU or memory. rps has no sensible default: say it.
SLICE_TARGETS = {"concurrency": 1, "cpu": 70, "memory": 70}
# A gateway only waits on its slices: one pod holds many requests (Knative's own default, 100).
GATEWAY_TARGETS = {"concurrency": 100, "cpu": 70, "memory": 70}
_DELAY = re.compile(r"^([0-9]+)(s|m|h)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}
MAX_DELAY_SECONDS = 3600


@dataclass(frozen=True)
class Autoscaling:
    min_scale: int = 1
    max_scale: int = 10
    target: int | None = None  # None: the metric's default on the chosen path
    metric: str | None = None  # None: concurrency on Knative, cpu without it
    scale_to_zero: bool = False
    scale_down_delay: str | None = None

    @property
    def floor(self) -> int:
        return 0 if self.scale_to_zero else self.min_scale

    def delay_seconds(self) -> int | None:
        match = _DELAY.match(self.scale_down_delay or "")
        return int(match.group(1)) * _SECONDS[match.group(2)] if match else None

    def on(self, serving: str, where: str, defaults: Mapping[str, int]) -> Autoscaling:
        """These settings with metric and target resolved for `serving`; SpecError where that path
        cannot honour them."""
        metric = self.metric or ("concurrency" if serving == KNATIVE else "cpu")
        if serving == DEPLOYMENT and metric in REQUEST_METRICS:
            raise SpecError(f"{where}.metric: {metric} needs Knative's autoscaler; without Knative use cpu or memory")
        if serving == KNATIVE and metric in RESOURCE_METRICS and self.scale_down_delay:
            raise SpecError(
                f"{where}.scaleDownDelay: Knative delays scale-down on concurrency or rps only (its KPA), not {metric}"
            )
        target = self.target if self.target is not None else defaults.get(metric)
        if target is None:
            raise SpecError(f"{where}.target: metric {metric} needs a target (requests per second per replica)")
        return replace(self, metric=metric, target=target)


def parse_autoscaling(data: Mapping[str, Any], where: str) -> Autoscaling:
    fields.known(data, where, {"minScale", "maxScale", "target", "metric", "scaleToZero", "scaleDownDelay"})
    scale_to_zero = fields.boolean(data, "scaleToZero", f"{where}.scaleToZero", False)
    min_scale = fields.required_integer(data, "minScale", f"{where}.minScale", 0 if scale_to_zero else 1, 0)
    max_scale = fields.required_integer(data, "maxScale", f"{where}.maxScale", 10, 1)
    metric = fields.choice(data, "metric", f"{where}.metric", METRICS, None)
    if scale_to_zero and min_scale > 0:
        raise SpecError(f"{where}: scaleToZero needs minScale 0 (or unset), got {min_scale}")
    if scale_to_zero and metric in RESOURCE_METRICS:
        raise SpecError(f"{where}: scaleToZero needs a request metric; autoscalers on {metric} keep one replica")
    if min_scale > max_scale:
        raise SpecError(f"{where}: minScale {min_scale} is above maxScale {max_scale}")
    percent = metric in RESOURCE_METRICS
    target = fields.integer(data, "target", f"{where}.target", None, 1, 100 if percent else fields.INT32_MAX)
    delay = data.get("scaleDownDelay")
    if delay is not None:
        match = _DELAY.match(delay) if isinstance(delay, str) else None
        if match is None or int(match.group(1)) * _SECONDS[match.group(2)] > MAX_DELAY_SECONDS:
            raise SpecError(f"{where}.scaleDownDelay: a duration up to 1h, such as 30s, 5m or 1h, got {delay!r}")
    return Autoscaling(min_scale, max_scale, target, metric, scale_to_zero, delay)
