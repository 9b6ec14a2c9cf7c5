"""What moving the activations was predicted to cost and what it cost, per codec (pure).

`mopar bench --codec auto --codec none ...` serves the same cuts with the workers told each
codec in turn: `auto` is the plan's choice per tensor (from the link model), the others one
setting for every tensor. `priced_with` prices the plan's cuts the way each serving moves
its tensors; `transfer_report` holds the prediction against what the workers measured: their
read (store round trip + decode) and write (encode + store round trip) times. A tensor
carried inside the slice calls is on the wire while the call is, outside the worker's own
timings, so for it only the encode and decode are predicted here (serve with
`--inline-kb 0` to have every activation's wire time in the comparison).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mopar.plan.linkmodel import Transfer
from mopar.plan.planner import Coster, Option, Plan
from slice_runtime import manifest as manifests
from slice_runtime.codec import CodecSetting


def parse_codec(text: str) -> str:
    """A `--codec` value as a worker's `--codec` takes it: auto, none, zstd:LEVEL (or zstdLEVEL),
    with an optional +shuffle; ValueError on anything else."""
    name = text.strip().lower()
    if name == "auto":
        return name
    if name.startswith("zstd:"):
        name = "zstd" + name[len("zstd:") :]
    try:
        return CodecSetting.parse(name).name
    except ValueError as error:
        raise ValueError(f"--codec {text!r}: {error}; or auto, or zstd:LEVEL") from None


def priced_with(plan: Plan, codec: str) -> Plan:
    """The plan's cuts priced with every tensor moved as workers told `codec` move it (`auto`:
    the plan itself); ValueError when the link model has no measured speed for `codec`."""
    if codec == "auto":
        return plan
    coster = Coster(plan.graph, plan.memory, replace(plan.link, codec=codec), plan.pricing, plan.constraints)
    options = [coster.option(o.stats, o.parts, o.group, o.prepack, o.allocation) for o in plan.slices]
    if any(o is None for o in options):  # memory does not depend on the codec: a bug if it happens
        raise ValueError(f"the plan's slices no longer fit their memory bounds with codec {codec}")
    gateway_ms = coster.gateway_ms()
    return replace(plan, link=coster.link, slices=[o for o in options if o is not None], gateway_ms=gateway_ms)


def worker_transfer_ms(plan: Plan, option: Option) -> float:
    """What one function of `option` spends moving its tensors, as its worker times it: reads
    (round trip + decode) and writes (encode + round trip) through the store, only the decode
    and encode of tensors carried inside the calls."""
    coster = Coster(plan.graph, plan.memory, plan.link, plan.pricing, plan.constraints)
    reads = [coster.transfer(t) for t in option.stats.inputs]
    writes = [coster.transfer(t, option.parts) for t in option.stats.outputs]
    hop = plan.link.hop_ms
    read = sum(_seen(t, t.read_ms) for t in reads) + (hop if any(not t.inline for t in reads) else 0.0)
    write = sum(_seen(t, t.write_ms) for t in writes) + (hop if any(not t.inline for t in writes) else 0.0)
    return read + write


def _seen(transfer: Transfer, ms: float) -> float:
    return ms - transfer.wire_ms if transfer.inline else ms


def transfer_report(plan: Plan, manifest: manifests.Manifest, stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per function and in sum: predicted and measured (median read + write) transfer ms, the
    ratio measured / predicted, and the bytes each request moved raw and on the wire."""
    by_group = {manifests.slice_id(i): option for i, option in enumerate(plan.slices)}
    rows, predicted, measured, raw, wire = {}, 0.0, 0.0, 0.0, 0.0
    for entry in manifest.slices:
        worker = stats[entry.id]
        runs = max(int(worker["runs"]), 1)
        expected = worker_transfer_ms(plan, by_group[entry.group or entry.id])
        seen = float(worker["read_ms"] or 0.0) + float(worker["write_ms"] or 0.0)
        rows[entry.id] = {"predicted_ms": round(expected, 3), "measured_ms": round(seen, 3)}
        predicted, measured = predicted + expected, measured + seen
        raw += (worker["read_raw_bytes"] + worker["write_raw_bytes"]) / runs
        wire += (worker["read_wire_bytes"] + worker["write_wire_bytes"]) / runs
    return {
        "predicted_ms": round(predicted, 3),
        "measured_ms": round(measured, 3),
        "error": round(measured / predicted, 4) if predicted else None,
        "bytes_raw_per_request": round(raw),
        "bytes_wire_per_request": round(wire),
        "per_function": rows,
    }
