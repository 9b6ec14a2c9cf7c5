"""mopar's gateway against KServe's Python model server, the model served whole in both.

    python benchmarks/run_kserve.py --kserve-python /work/kserve-venv/bin/python \
        [--models mobilenetv2,resnet50] [--requests 30] [--out benchmarks/results]

It installs nothing itself: `--kserve-python` is a Python with `kserve` and onnxruntime, e.g.

    python -m venv /work/kserve-venv && /work/kserve-venv/bin/pip install kserve onnxruntime

For each zoo model (`mopar models build`): `mopar serve` of the model as one slice, and KServe's
`ModelServer` with a `kserve.Model` that runs the same ONNX file in onnxruntime (one intra- and
one inter-op thread, as mopar's worker). One client (this process, a kept-alive connection to
each) sends the same V2 requests to both, alternating, which goes first swapped every round:
JSON (tensor as a `data` array of numbers, the answer in JSON too) and binary (the binary tensor
extension both ways). The JSON body's parse alone is timed too, mopar's reader against
orjson.loads + numpy.array (KServe's REST path). Plain onnxruntime in this process (one thread) is timed in the same
rounds, so each server's overhead over the model itself is measured beside it. Medians, the
mopar/KServe ratios and the overheads go to OUT/kserve-MODEL.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from slice_runtime import v2  # noqa: E402
from slice_runtime.local import free_port  # noqa: E402

MODELS = ("mobilenetv2", "resnet50")
NAME = "model"  # both servers serve it under this name
ENCODINGS = ("json", "binary")

# The KServe side, run by --kserve-python: a kserve.Model over one onnxruntime session.
KSERVE_SERVER = """
import sys
import uuid
import numpy as np
import onnxruntime as ort
import orjson
import kserve
from kserve import InferOutput, InferResponse
from kserve.utils.numpy_codec import from_np_dtype


class OnnxModel(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload, headers=None):
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        arrays = self.session.run(names, feeds)
        outputs = [InferOutput(n, list(a.shape), from_np_dtype(a.dtype), data=a) for n, a in zip(names, arrays)]
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs,
        )


model = OnnxModel(sys.argv[1], sys.argv[2])
model.load()
kserve.ModelServer(http_port=int(sys.argv[3]), enable_grpc=False, workers=1,
                   enable_latency_logging=False).start([model])
"""


def mopar(*args: str) -> None:
    print("$ mopar " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mopar", *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def whole(model: str, work: Path) -> tuple[Path, Path]:
    """The zoo model's ONNX file and its slice directory of one slice (built once)."""
    onnx_file, sliced = work / f"{model}.onnx", work / f"{model}-whole"
    if not onnx_file.exists():
        mopar("models", "build", model, "-o", str(onnx_file))
    if not (sliced / "manifest.json").exists():
        plan = work / f"{model}.whole.plan.json"
        mopar("plan", str(onnx_file), "--slices", "1", "--no-split", "-o", str(plan))
        mopar("slice", str(onnx_file), "--plan", str(plan), "-o", str(sliced))
    return onnx_file, sliced


def wait_ready(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", f"/v2/models/{NAME}/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} was not ready within {timeout:g} s")


@contextmanager
def server(command: list[str], port: int, what: str, log: Path) -> Iterator[http.client.HTTPConnection]:
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_ready(port, process, what)
            yield http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def post(connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> float:
    """One inference, in ms, answer decoded (as a client would) and checked for an output."""
    started = time.perf_counter()
    connection.request("POST", f"/v2/models/{NAME}/infer", body=body, headers=headers)
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status}: {answer[:300]!r}")
    outputs = v2.decode_response(answer, response.getheader(v2.HEADER_LENGTH))
    elapsed = (time.perf_counter() - started) * 1e3
    assert outputs, "an answer without outputs"
    return elapsed


def bodies(session: ort.InferenceSession) -> tuple[dict[str, np.ndarray], dict[str, tuple[bytes, dict[str, str]]]]:
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    # JSON as tritonclient and KServe's client write it: each float32 as a Python float (17
    # digits; 2.96 MB for a 224x224 image), not at float32's shortest as mopar answers.
    items = [
        {"name": n, "shape": list(a.shape), "datatype": "FP32", "data": a.reshape(-1).tolist()}
        for n, a in feeds.items()
    ]
    encoded = {
        "json": (orjson.dumps({"inputs": items}), {"Content-Type": v2.JSON_TYPE}),
        "binary": v2.encode_request(feeds, binary=True, binary_outputs=True),
    }
    return feeds, encoded


def parse_times(body: bytes, rounds: int = 15) -> dict[str, float]:
    """The JSON body's parse alone, in this process, alternating: mopar's reader and what KServe's
    REST path does with it (orjson.loads of the whole body, then numpy.array of each `data`)."""
    readers = {
        "mopar": lambda: v2.parse_request(body, None),
        "orjson_numpy": lambda: [np.array(i["data"], dtype=np.float32) for i in orjson.loads(body)["inputs"]],
    }
    times: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(rounds):
        for name, read in readers.items():
            started = time.perf_counter()
            read()
            times[name].append((time.perf_counter() - started) * 1e3)
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def measure(model: str, kserve_python: str, work: Path, requests: int, warmup: int) -> dict[str, Any]:
    onnx_file, sliced = whole(model, work)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    feeds, encoded = bodies(session)
    script = work / "kserve_server.py"
    script.write_text(KSERVE_SERVER)
    mopar_port, kserve_port = free_port(), free_port()
    mopar_command = [sys.executable, "-m", "mopar", "serve", str(sliced), "--port", str(mopar_port), "--name", NAME]
    kserve_command = [kserve_python, str(script), NAME, str(onnx_file), str(kserve_port)]
    times: dict[str, dict[str, list[float]]] = {e: {"mopar": [], "kserve": [], "onnxruntime": []} for e in ENCODINGS}
    with (
        server(mopar_command, mopar_port, "mopar serve", work / f"{model}.mopar.log") as to_mopar,
        server(kserve_command, kserve_port, "kserve", work / f"{model}.kserve.log") as to_kserve,
    ):
        connections = {"mopar": to_mopar, "kserve": to_kserve}
        for round_ in range(warmup + requests):
            for encoding in ENCODINGS:
                body, headers = encoded[encoding]
                order = ["mopar", "kserve"] if round_ % 2 == 0 else ["kserve", "mopar"]
                for name in order:
                    elapsed = post(connections[name], body, headers)
                    started = time.perf_counter()
                    session.run(None, feeds)
                    plain = (time.perf_counter() - started) * 1e3
                    if round_ >= warmup:
                        times[encoding][name].append(elapsed)
                        times[encoding]["onnxruntime"].append(plain)
    result: dict[str, Any] = {"model": model, "requests": requests, "body_bytes": {}, "p50_ms": {}, "ratio": {}}
    result["json_parse_p50_ms"] = parse_times(encoded["json"][0])
    for encoding in ENCODINGS:
        p50 = {name: round(statistics.median(values), 2) for name, values in times[encoding].items()}
        result["body_bytes"][encoding] = len(encoded[encoding][0])
        result["p50_ms"][encoding] = p50
        result["ratio"][encoding] = {
            "mopar_over_kserve": round(p50["mopar"] / p50["kserve"], 3),
            "mopar_added_ms": round(p50["mopar"] - p50["onnxruntime"], 2),
            "kserve_added_ms": round(p50["kserve"] - p50["onnxruntime"], 2),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kserve-python", required=True, help="a Python with kserve and onnxruntime installed")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--requests", type=int, default=30, help="measured rounds per model (default 30)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    check = subprocess.run([args.kserve_python, "-c", "import kserve, onnxruntime"], capture_output=True)
    if check.returncode != 0:
        print(f"error: {args.kserve_python} cannot import kserve and onnxruntime", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("MOPAR_BENCH_WORK") or tempfile.mkdtemp(prefix="mopar-kserve-"))
    work.mkdir(parents=True, exist_ok=True)
    for model in args.models.split(","):
        result = measure(model, args.kserve_python, work, args.requests, args.warmup)
        path = args.out / f"kserve-{model}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
