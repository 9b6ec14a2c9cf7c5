"""Peak resident memory of a model run in a fresh process: what a function really needs.

`measure_peak_rss(model)` starts `python -m slice_runtime.footprint MODEL`, which opens
the model the way a worker does, runs it on seeded inputs and reports its peak RSS
(VmHWM). Without a model it reports the runtime baseline: the interpreter, the
worker's imports and an empty onnxruntime session, which every slice pays.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

# The smallest valid model (one Identity on a scalar), serialised, so the baseline
# child needs neither the onnx package nor a file of ours on disk.
_EMPTY_MODEL = bytes.fromhex(
    "080812056d6f7061723a3f0a140a01781201791a02696422084964656e746974791205656d7074795a0f0a"
    "0178120a0a08080112040a020801620f0a0179120a0a08080112040a02080142040a001011"
)


def measure_peak_rss(
    model: str | Path | None = None, threads: int = 1, optimization: str = "all", runs: int = 2, prepack: bool = True
) -> int:
    """Peak RSS in bytes of a fresh process that loads `model` as a worker would (`prepack`: see
    `sessions.open_serving_session`) and runs it `runs` times."""
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            model = Path(tmp) / "empty.onnx"
            model.write_bytes(_EMPTY_MODEL)
            runs = 0
        command = [
            sys.executable, "-m", "slice_runtime.footprint",
            str(model), str(threads), optimization, str(runs), "prepack" if prepack else "plain",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring the memory of {model} failed: {last}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_bytes"])


def _child(model: str, threads: int, optimization: str, runs: int, prepack: bool) -> None:
    # Import what a worker imports, so the baseline is the baseline of a real slice process.
    import aiohttp  # noqa: F401
    import numpy  # noqa: F401
    import prometheus_client  # noqa: F401
    import redis  # noqa: F401
    import zstandard  # noqa: F401

    from slice_runtime import allocator, sessions, tensors

    allocator.keep_large_buffers()  # as workers run

    if optimization == "all":  # served optimised ahead of time, as workers load it
        session = sessions.open_serving_session(model, threads=threads, prepack=prepack)
    else:
        session = sessions.open_session(model, threads=threads, optimization=optimization)
    specs = [tensors.TensorSpec.of_ort(i) for i in session.get_inputs()]
    ranges = tensors.input_ranges(session.get_modelmeta().custom_metadata_map)
    feeds = tensors.random_inputs(specs, seed=0, ranges=ranges)
    for _ in range(runs):
        session.run(None, feeds)
    print(json.dumps({"peak_rss_bytes": peak_rss_bytes()}))


def rss_bytes() -> int:
    """This process's resident memory now (VmRSS), 0 where /proc is not there."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: on Linux ru_maxrss survives
    execve, so a child forked from a large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "prepack")
