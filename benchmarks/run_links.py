"""Activations over real links: calibrate and benchmark across hosts in network namespaces.

    python benchmarks/run_links.py [--models yolov5s,resnet50] [--requests 30]
                                   [--rates loopback,200mbit,1gbit]
                                   [--out benchmarks/results/links] [--render]

For each rate, a topology of five hosts on one switch, every link at that rate
(`mopar.bench.topology`): Redis on `redis`, the gateway (the benchmark's own process) on
`gw`, the slices on `w0`, `w1`, `w2`. On it, run from the gateway's host:

    mopar calibrate --transport redis://REDIS:6379/0 --worker-host W0 -o MODEL.RATE.link.json
    mopar bench MODEL --slices 3 --link MODEL.RATE.link.json --transport redis://REDIS:6379/0
        --worker-host W0 --worker-host W1 --worker-host W2 --inline-kb 0
        --codec auto --codec none -o MODEL.RATE.json

and read every host's interface counters before and after the benchmark. `loopback` is the
same on one host: Redis, gateway and workers in one namespace, everything over its loopback.
`--inline-kb 0` sends every activation through Redis, so every one crosses the Redis link
and the workers' own timings hold its whole transfer. Each run's result is kept in --out;
the section of benchmarks/links.md between its markers is rendered from them (`--render`
renders without measuring).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from mopar.bench.topology import Network, Topology  # noqa: E402

BEGIN, END = "<!-- links: begin -->", "<!-- links: end -->"
WORKERS = ("w0", "w1", "w2")


def mopar(network: Network | None, host: str, *args: str) -> None:
    """`mopar ARGS` on `host` of `network` (None: here), printed as run, failing loudly."""
    print("$ mopar " + " ".join(args), flush=True)
    command = [sys.executable, "-m", "mopar", *args]
    done = network.run(host, command, cwd=ROOT) if network else subprocess.run(command, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mopar {args[0]} failed with exit status {done.returncode}")


def measure(model: str, rate: str, out: Path, requests: int) -> None:
    work = out / "work"
    onnx_file, profile = work / f"{model}.onnx", work / f"{model}.profile.json"
    link, result = out / f"{model}.{rate}.link.json", out / f"{model}.{rate}.json"
    hosts = ("local",) if rate == "loopback" else ("redis", "gw", *WORKERS)
    topology = Topology(f"mopar-links{os.getpid()}", hosts, None if rate == "loopback" else rate)
    with Network(topology) as network, tempfile.TemporaryDirectory(prefix="mopar-links-") as tmp:
        redis_host, gateway = ("local", "local") if rate == "loopback" else ("redis", "gw")
        url = network.start_redis(redis_host, Path(tmp))
        workers = [] if rate == "loopback" else [a for w in WORKERS for a in ("--worker-host", topology.worker_host(w))]
        print(f"# {rate}: uptime {os.getloadavg()}", flush=True)
        mopar(network, gateway, "calibrate", "--transport", url, *workers[:2], "-o", str(link))
        before = {host: network.link_bytes(host) for host in hosts}
        started = time.monotonic()
        mopar(
            network, gateway, "bench", str(onnx_file), "--profile", str(profile), "--slices", "3",
            "--link", str(link), "--transport", url, *workers, "--inline-kb", "0",
            "--codec", "auto", "--codec", "none", "--requests", str(requests), "-o", str(result),
        )  # fmt: skip
        elapsed = time.monotonic() - started
        after = {host: network.link_bytes(host) for host in hosts}
    data = json.loads(result.read_text())
    data["links"] = {
        "rate": rate,
        "load_average": os.getloadavg(),
        "seconds": round(elapsed, 1),
        "link_model": json.loads(link.read_text()),
        "interface_bytes": {h: {"received": after[h][0] - before[h][0], "sent": after[h][1] - before[h][1]}
                            for h in hosts},
    }  # fmt: skip
    result.write_text(json.dumps(data, indent=1) + "\n")


def prepare(model: str, out: Path) -> None:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    onnx_file, profile = work / f"{model}.onnx", work / f"{model}.profile.json"
    if not onnx_file.exists():
        mopar(None, "", "models", "build", model, "-o", str(onnx_file))
    if not profile.exists():
        mopar(None, "", "profile", str(onnx_file), "--top", "5", "-o", str(profile))


def _ms(transfer: dict[str, Any]) -> str:
    return f"{transfer['predicted_ms']:.1f} / {transfer['measured_ms']:.1f} ({transfer['error']:.2f}x)"


def _row(model: str, rate: str, data: dict[str, Any]) -> str:
    auto, none, link = data["codecs"]["auto"], data["codecs"]["none"], data["links"]["link_model"]
    chosen = ", ".join(sorted(set(data["plan"]["codecs"].values())))
    measured = f"{link['bytes_per_ms'] * 8 / 1e3:,.0f} Mbit/s, hop {link['hop_ms']:.2f} ms"
    raw, wire = (auto["transfer"][f"bytes_{k}_per_request"] / 1e6 for k in ("raw", "wire"))
    wire_none = none["transfer"]["bytes_wire_per_request"] / 1e6
    return (
        f"| {model} | {rate} | {measured} | {chosen} | {auto['p50_ms']:.1f} | {none['p50_ms']:.1f} | "
        f"**{data['ratios']['codec_p50']['none']:.3f}** | {raw:.2f} / {wire:.2f} / {wire_none:.2f} | "
        f"{_ms(auto['transfer'])} | {_ms(none['transfer'])} | "
        f"{auto['predicted']['latency_ms']:.1f} / {none['predicted']['latency_ms']:.1f} | "
        f"{data['links']['load_average'][0]:.1f} |"
    )


HEADER = (
    "| model | link | calibrated | planner's codecs at the cuts | p50 auto ms | p50 none ms | auto / none "
    "| MB per request: raw / wire auto / wire none | transfer ms auto: predicted / measured | same, none "
    "| predicted p50 auto / none | load |\n|" + "---|" * 12
)


def render(models: list[str], out: Path, rates: list[str]) -> None:
    rows, counters = [], []
    for model in models:
        for rate in rates:
            path = out / f"{model}.{rate}.json"
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            rows.append(_row(model, rate, data))
            moved = ", ".join(
                f"{host} {c['received'] / 1e6:,.0f} in / {c['sent'] / 1e6:,.0f} out"
                for host, c in data["links"]["interface_bytes"].items()
            )
            moved = "everything on the host's loopback" if rate == "loopback" else f"{moved} MB"
            counters.append(f"- {model}, {rate} ({data['links']['seconds']:.0f} s of benchmark): {moved}")
    counted = "Bytes each host's link counted during the benchmark (every serving, warm-up included):"
    section = "\n".join([BEGIN, HEADER, *rows, "", counted, "", *counters, END])
    results = HERE / "links.md"
    text = results.read_text()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text += "\n" + section + "\n"
    results.write_text(text)
    print(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="yolov5s", help="zoo models, comma-separated (default yolov5s)")
    parser.add_argument("--requests", type=int, default=30, help="measured requests per serving (default 30)")
    parser.add_argument("--rates", default="loopback,200mbit,1gbit", help="links to measure across (tc rates)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "links")
    parser.add_argument("--render", action="store_true", help="only render links.md from the kept results")
    args = parser.parse_args()
    models, rates = args.models.split(","), args.rates.split(",")
    if not args.render:
        for model in models:
            prepare(model, args.out)
            for rate in rates:
                measure(model, rate, args.out, args.requests)
    render(models, args.out, rates)


if __name__ == "__main__":
    main()
