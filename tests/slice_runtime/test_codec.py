"""The codec: exact round trips of every dtype and setting; bad frames rejected."""

from __future__ import annotations

import numpy as np
import pytest

from mopar.plan.linkmodel import CodecSpeed, LinkModel
from slice_runtime import codec
from slice_runtime.codec import CodecError, CodecSetting

DTYPES = ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "bool"]  # fmt: skip


def _array(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.dtype(dtype).kind == "f":
        return np.maximum(rng.standard_normal(shape), 0).astype(dtype)  # post-ReLU-like: compressible
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("setting", codec.CANDIDATES, ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_exactly(dtype: str, setting: CodecSetting) -> None:
    for shape in [(2, 64, 33), (5,), (), (0, 3)]:
        array = _array(dtype, shape)
        frame = codec.encode(array, setting, threshold=0)
        back = codec.decode(frame)
        assert back.dtype == array.dtype and back.shape == array.shape
        assert np.array_equal(back, array)


def test_compression_pays_on_sparse_activations_and_small_tensors_go_raw() -> None:
    array = _array("float32", (64, 56, 56))
    raw, compressed = codec.encode(array), codec.encode(array, CodecSetting(1))
    assert len(compressed) < 0.8 * len(raw)
    assert codec.frame_info(compressed) == (array.nbytes, len(compressed))
    small = _array("float32", (100,))
    assert len(codec.encode(small, CodecSetting(3), threshold=4096)) == len(codec.encode(small))


def test_incompressible_data_is_sent_raw() -> None:
    noise = np.random.default_rng(1).integers(0, 256, size=100_000, dtype=np.uint8)
    assert len(codec.encode(noise, CodecSetting(3))) == len(codec.encode(noise))


def test_nan_and_infinity_survive() -> None:
    array = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], dtype=np.float32)
    back = codec.decode(codec.encode(np.tile(array, 2000), CodecSetting(1, True)))
    assert np.array_equal(back, np.tile(array, 2000), equal_nan=True)


@pytest.mark.parametrize("name", ["none", "zstd1", "zstd-5", "zstd3+shuffle", "zstd-7"])
def test_setting_names_round_trip(name: str) -> None:
    assert CodecSetting.parse(name).name == name


@pytest.mark.parametrize("name", ["gzip", "zstd", "zstd1+xor", "zstd99"])
def test_unknown_settings_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        CodecSetting.parse(name)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"MPR1",
        b"XXXX" + bytes(20),
        codec.encode(np.ones(10, np.float32))[:-3],
        codec.encode(np.ones(10000, np.float32), CodecSetting(1))[:-5],
    ],
    ids=["empty", "header-only", "wrong-magic", "truncated-raw", "truncated-zstd"],
)
def test_malformed_frames_raise_codec_error(frame: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(frame)


def test_link_model_picks_the_codec_per_link() -> None:
    speeds = {"zstd1": CodecSpeed(300_000, 800_000), "zstd-5": CodecSpeed(600_000, 1_300_000)}
    ratios = {"zstd1": 2.2, "zstd-5": 1.6}
    fast = LinkModel(hop_ms=0.1, bytes_per_ms=1_000_000, invoke_ms=0.5, codecs=speeds)  # ~1 GB/s loopback
    slow = LinkModel(hop_ms=0.5, bytes_per_ms=12_500, invoke_ms=0.5, codecs=speeds)  # ~100 Mbit/s
    size = 400_000
    assert fast.transfer(size, ratios).setting.name == "none"  # compressing costs more than it saves
    assert slow.transfer(size, ratios).setting.name == "zstd1"  # the link is the bottleneck
    assert slow.transfer(100, ratios).setting.name == "none"  # below the threshold
    chosen = slow.transfer(size, ratios)
    assert chosen.write_ms + chosen.read_ms < slow.transfer(size, {}).write_ms * 2


def test_reference_link_model_loads() -> None:
    model = LinkModel.load()
    assert model.bytes_per_ms > 0 and "zstd1" in model.codecs and model.source
