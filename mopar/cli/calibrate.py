"""`mopar calibrate -o link.json`: measure the link model (codecs, the store, per-slice overhead),
here or across the links to a store and a workers' host."""

from __future__ import annotations

import argparse

from mopar.cli.console import err, out
from mopar.errors import UsageError


def run(args: argparse.Namespace) -> int:
    from mopar.bench.calibration import calibrate, shown_url
    from mopar.bench.topology import parse_host
    from slice_runtime.store import open_transport

    try:
        host = parse_host(args.worker_host) if args.worker_host else None
        open_transport(args.transport, "calibrate", "link")  # the URL's form; nothing is contacted yet
    except ValueError as error:
        raise UsageError(str(error)) from None
    store = shown_url(args.transport)
    where = f"workers at {host.address}" if host else "workers here"
    err.print(f"measuring codecs, the store at {store} and the per-slice overhead of {where} ...")
    command = f"mopar calibrate --transport {store}" + (f" --worker-host {args.worker_host}" if host else "")
    model = calibrate(args.transport, host, args.repeat, source=command)
    model.save(args.output)
    out.print(
        f"store round trip {model.hop_ms:.3f} ms, {model.bytes_per_ms / 1e6:.3f} GB/s "
        f"({model.bytes_per_ms * 8e3 / 1e6:,.0f} Mbit/s); per-slice overhead {model.invoke_ms:.3f} ms, "
        f"per request {model.request_ms:.3f} ms; "
        f"tensors up to {model.inline_bytes // 1024} KiB inside the calls at {model.call_bytes_per_ms / 1e6:.3f} GB/s; "
        f"parallel efficiency of two sub-slices {model.parallel_efficiency:.2f}"
    )
    for name, speed in model.codecs.items():
        out.print(
            f"  {name:16s} encode {speed.encode_bytes_per_ms / 1e6:6.2f} GB/s   "
            f"decode {speed.decode_bytes_per_ms / 1e6:6.2f} GB/s"
        )
    err.print(f"wrote {args.output}")
    return 0
