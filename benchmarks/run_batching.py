"""Dynamic batching at the gateway, with and without, and write benchmarks/batching.md.

    python benchmarks/run_batching.py [--requests 96] [--out benchmarks/results] [--render]
        [--notes benchmarks/batching-notes.md]

For each model (ResNet-50 and BERT-base at full size, and a small ResNet whose requests are
short, each built by the zoo with a symbolic batch): `mopar bench MODEL --max-batch 8
--batching --concurrency 8`, which serves the peer, mopar whole and mopar partitioned, and the
two mopar servings again with dynamic batching, in turns. Each run's result.json is kept
beside the others (`batching-NAME.json`); `--render` rebuilds batching.md from them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name: zoo model and build options (all with a symbolic batch)
MODELS = {
    "resnet50": ("resnet50", []),
    "bert-base": ("bert-base", []),
    "resnet50-small": ("resnet50", ["--scale", "0.25", "--set", "image=64"]),
}
BENCH = ["--max-batch", "8", "--batching", "--concurrency", "8"]


def mopar(*args: str) -> None:
    print("$ mopar " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "mopar", *args], check=True, cwd=ROOT)


def measure(name: str, out: Path, requests: int) -> None:
    zoo_name, options = MODELS[name]
    model = out / "work" / f"{name}.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    if not model.exists():
        mopar("models", "build", zoo_name, *options, "--set", "batch=dynamic", "-o", str(model))
    mopar("bench", str(model), *BENCH, "--requests", str(requests), "-o", str(out / f"batching-{name}.json"))


def render(out: Path) -> str:
    rows = []
    for name in MODELS:
        path = out / f"batching-{name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        functions = result["partitioned"]["functions"]
        for label in ("whole", "partitioned"):
            plain, batched = result[label], result["batched"][label]
            ratio = batched["vs_unbatched"]
            serving = label if label == "whole" else f"partitioned ({functions} functions)"
            rows.append(
                f"| {name} | {serving} | {plain['throughput_rps']:.2f} | {batched['throughput_rps']:.2f} "
                f"| {ratio['throughput']:.2f}x | {plain['p50_ms']:.1f} / {plain['p99_ms']:.1f} "
                f"| {batched['p50_ms']:.1f} / {batched['p99_ms']:.1f} "
                f"| {1 / batched['slices'][0]['runs_per_request']:.2f} |"
            )
        settings = result["settings"]
    lines = [
        "# Dynamic batching",
        "",
        "Throughput and latency of mopar whole and partitioned with and without the gateway's dynamic",
        "batching, in the same run and the same turns, on this machine's two cores (one onnxruntime",
        "thread per function, shared memory). Every request carries one input of batch 1; eight are",
        "in flight at once; the gateway merges them into batches of up to 8 (maxQueueDelayMicroseconds",
        "0: a batch takes whatever is queued; at most two batches per pipeline stage in flight).",
        "",
        "Produced by:",
        "",
        "```sh",
        f"python benchmarks/run_batching.py --requests {settings['requests']}",
        "```",
        "",
        "which builds each model with a symbolic batch (`mopar models build NAME --set batch=dynamic`)",
        f"and runs `mopar bench MODEL.onnx {' '.join(BENCH)} --requests {settings['requests']}`.",
        "",
        "| model | serving | rps | rps batched | ratio | p50 / p99 ms | p50 / p99 ms batched "
        "| requests / run batched |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "rps: requests per second; ratio: batched / not. Requests / run: how many requests the",
        "serving's first function answered per run on average (1 without batching).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--render", action="store_true", help="only rebuild batching.md from existing results")
    parser.add_argument("--notes", help="a Markdown file appended to batching.md (what the numbers mean)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.render:
        for name in MODELS:
            measure(name, out, args.requests)
    text = render(out)
    if args.notes:
        text += "\n" + Path(args.notes).read_text()
    (HERE / "batching.md").write_text(text + "\n")
    print(f"wrote {HERE / 'batching.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
