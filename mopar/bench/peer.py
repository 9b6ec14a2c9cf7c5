"""The peer: the model served whole by plain onnxruntime, the way a user would run it instead.

`InferenceSession(model, SessionOptions())` with the default options but the thread count
(what KServe's and Triton's ONNX backends do), in a process of its own, driven over a pipe
so no HTTP stands between the benchmark and `run()`: what is measured is onnxruntime
itself. Commands, one JSON line each on stdin, answers one JSON line each on stdout:

    {"runs": K, "concurrency": C}  ->  {"run_ms": [...], "wall_ms": W}   (K runs, C at once)
    {"stats": true}                ->  {"peak_rss_bytes": ..., "options": {...}}

The inputs are the benchmark's own (seeded), so every serving computes the same request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import onnxruntime as ort

from slice_runtime.footprint import peak_rss_bytes
from slice_runtime.tensors import TensorSpec, input_ranges, random_inputs


def default_session(model: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()  # onnxruntime's defaults, as a user's server would leave them
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def described(options: ort.SessionOptions) -> dict[str, Any]:
    """The options that decide speed and memory, as the peer ran with them."""
    return {
        "graph_optimization_level": str(options.graph_optimization_level),
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "execution_mode": str(options.execution_mode),
        "enable_cpu_mem_arena": options.enable_cpu_mem_arena,
        "enable_mem_pattern": options.enable_mem_pattern,
    }


def serve(model: str, threads: int) -> None:
    session = default_session(model, threads)
    specs = [TensorSpec.of_ort(i) for i in session.get_inputs()]
    feeds = random_inputs(specs, seed=0, ranges=input_ranges(session.get_modelmeta().custom_metadata_map))
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="peer")

    def timed(_: int) -> float:
        started = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - started) * 1000.0

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("stats"):
            reply = {"peak_rss_bytes": peak_rss_bytes(), "options": described(session.get_session_options())}
        else:
            started = time.perf_counter()
            runs, concurrency = int(command["runs"]), int(command.get("concurrency", 1))
            if concurrency == 1:
                times = [timed(i) for i in range(runs)]
            else:
                times = list(pool.map(timed, range(runs)))
            reply = {"run_ms": times, "wall_ms": (time.perf_counter() - started) * 1000.0}
        print(json.dumps(reply), flush=True)


class Peer:
    """A peer process and its pipe."""

    def __init__(self, model: Path, threads: int = 1) -> None:
        command = [sys.executable, "-m", "mopar.bench.peer", str(model), str(threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()  # {"ready": true}, once the session is loaded

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer process exited with {self.process.wait()}")
        return dict(json.loads(line))

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def run(self, runs: int, concurrency: int = 1) -> tuple[list[float], float]:
        """(run() times in ms, wall ms) of `runs` runs, `concurrency` at once."""
        reply = self.ask({"runs": runs, "concurrency": concurrency})
        return [float(t) for t in reply["run_ms"]], float(reply["wall_ms"])

    def stats(self) -> dict[str, Any]:
        return self.ask({"stats": True})

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
