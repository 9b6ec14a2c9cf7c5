"""A measured model of moving one tensor between slices, and the codec choice it implies (pure).

Moving a tensor of B bytes costs the producer an encode and a write, and every consumer
a read and a decode: encode(B) + wire(B / ratio) + decode(B). A frame that fits travels
inside the control call (`slice_runtime.calls`) at the call's throughput; the others go
through the store at its throughput, plus one store round trip per batch of writes or
reads. Every slice invocation costs one control call. The codec that
minimises this differs per tensor (its ratio) and per link (its throughput): on a fast
link zstd can cost more time than the bytes it saves, on a slow one it pays. Numbers come
from `mopar calibrate` (the real store and real workers across the link, real codec runs)
and per-tensor ratios from the profile. `codec` other than `auto` prices every tensor with
one setting, as workers told `--codec SETTING` move them (what `mopar bench` predicts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slice_runtime.codec import CANDIDATES, DEFAULT_THRESHOLD_BYTES, NONE, CodecSetting

DEFAULT_PATH = Path(__file__).with_name("linkmodel-default.json")


@dataclass(frozen=True)
class CodecSpeed:
    encode_bytes_per_ms: float
    decode_bytes_per_ms: float


@dataclass(frozen=True)
class Transfer:
    """One tensor's move: the chosen codec and the time each side spends on it."""

    setting: CodecSetting
    raw_bytes: int
    wire_bytes: int
    write_ms: float  # encode + write, paid by the producer
    read_ms: float  # read + decode, paid by each consumer
    inline: bool = False  # carried inside the slice calls (`slice_runtime.calls`), not through the store
    wire_ms: float = 0.0  # on the wire, each way (in write_ms and in read_ms)


@dataclass(frozen=True)
class LinkModel:
    hop_ms: float  # one round trip to the store for a pipelined batch
    bytes_per_ms: float  # store throughput, each direction
    invoke_ms: float  # one control call to a slice worker (HTTP), framework included
    codecs: Mapping[str, CodecSpeed] = field(default_factory=dict)
    threshold_bytes: int = DEFAULT_THRESHOLD_BYTES
    # How much of the ideal speed-up parallel sub-slices reach: 1.0 when each runs on its own
    # idle core; lower where they share cores, caches and memory bandwidth.
    parallel_efficiency: float = 1.0
    # Frames up to `inline_bytes` travel inside the slice calls at `call_bytes_per_ms`, with no
    # store round trip (0: every tensor through the store).
    inline_bytes: int = 0
    call_bytes_per_ms: float = 1.0
    source: str = ""  # how the numbers were obtained
    codec: str = "auto"  # auto: the fastest setting per tensor; else this one for every tensor
    # What a request costs at the gateway beyond its slices' calls and its tensors' moves: the
    # client's HTTP round trip, parsing the request and encoding the answer.
    request_ms: float = 0.0

    def part_ms(self, compute_ms: float, parts: int) -> float:
        """Compute time of one of `parts` parallel sub-slices of a `compute_ms` slice."""
        return compute_ms if parts == 1 else compute_ms / parts / self.parallel_efficiency

    def transfer(self, nbytes: int, ratios: Mapping[str, float] | None = None) -> Transfer:
        """The fastest way to move `nbytes` whose compression ratio per setting is `ratios`
        (settings without a measured ratio, or without measured speeds, are not considered):
        inside the calls when the frame fits, else through the store."""
        best = self._moved(NONE, nbytes, nbytes, 0.0, 0.0)
        if self.codec != "auto":
            return self._forced(CodecSetting.parse(self.codec), nbytes, ratios or {}, best)
        if nbytes < self.threshold_bytes:
            return best
        for setting in CANDIDATES:
            speed = self.codecs.get(setting.name)
            ratio = (ratios or {}).get(setting.name)
            if setting == NONE or speed is None or not ratio or ratio <= 1.0:
                continue
            encode, decode = nbytes / speed.encode_bytes_per_ms, nbytes / speed.decode_bytes_per_ms
            candidate = self._moved(setting, nbytes, int(nbytes / ratio), encode, decode)
            if candidate.write_ms + candidate.read_ms < best.write_ms + best.read_ms:
                best = candidate
        return best

    def _forced(self, setting: CodecSetting, nbytes: int, ratios: Mapping[str, float], raw: Transfer) -> Transfer:
        """The move with `setting`, as `codec.encode` makes it: raw below the threshold, and raw
        (but encoded in vain) where compression does not shrink the tensor."""
        if setting == NONE or nbytes < self.threshold_bytes:
            return raw
        speed = self.codecs.get(setting.name)
        if speed is None:
            raise ValueError(f"the link model has no measured speed for codec {setting.name}")
        encode = nbytes / speed.encode_bytes_per_ms
        ratio = ratios.get(setting.name, 1.0)
        if ratio <= 1.0:
            return self._moved(setting, nbytes, nbytes, encode, 0.0)
        return self._moved(setting, nbytes, int(nbytes / ratio), encode, nbytes / speed.decode_bytes_per_ms)

    def _moved(self, setting: CodecSetting, raw: int, wire: int, encode_ms: float, decode_ms: float) -> Transfer:
        inline = wire <= self.inline_bytes
        wire_ms = wire / (self.call_bytes_per_ms if inline else self.bytes_per_ms)
        return Transfer(setting, raw, wire, encode_ms + wire_ms, wire_ms + decode_ms, inline, wire_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "hop_ms": self.hop_ms,
            "bytes_per_ms": self.bytes_per_ms,
            "invoke_ms": self.invoke_ms,
            "request_ms": self.request_ms,
            "threshold_bytes": self.threshold_bytes,
            "parallel_efficiency": self.parallel_efficiency,
            "inline_bytes": self.inline_bytes,
            "call_bytes_per_ms": self.call_bytes_per_ms,
            "codecs": {
                name: {"encode_bytes_per_ms": s.encode_bytes_per_ms, "decode_bytes_per_ms": s.decode_bytes_per_ms}
                for name, s in self.codecs.items()
            },
            "source": self.source,
            "codec": self.codec,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinkModel:
        return cls(
            hop_ms=float(data["hop_ms"]),
            bytes_per_ms=float(data["bytes_per_ms"]),
            invoke_ms=float(data["invoke_ms"]),
            request_ms=float(data.get("request_ms", 0.0)),
            codecs={
                name: CodecSpeed(float(s["encode_bytes_per_ms"]), float(s["decode_bytes_per_ms"]))
                for name, s in data.get("codecs", {}).items()
            },
            threshold_bytes=int(data.get("threshold_bytes", DEFAULT_THRESHOLD_BYTES)),
            parallel_efficiency=float(data.get("parallel_efficiency", 1.0)),
            inline_bytes=int(data.get("inline_bytes", 0)),
            call_bytes_per_ms=float(data.get("call_bytes_per_ms", 1.0)),
            source=str(data.get("source", "")),
            codec=str(data.get("codec", "auto")),
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> LinkModel:
        """The model in `path`, or the one measured on the reference machine (see its `source`)."""
        return cls.from_json(json.loads(Path(path or DEFAULT_PATH).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")
