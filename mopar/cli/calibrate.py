"""`mopar calibrate -o link.json`: measure the link model (codecs, the store, per-slice overhead)."""

from __future__ import annotations

import argparse

from mopar.cli.console import err, out


def run(args: argparse.Namespace) -> int:
    from mopar.bench.calibration import calibrate

    err.print(f"measuring codecs, the store at {args.redis} and the per-slice overhead of real workers ...")
    model = calibrate(args.redis)
    model.save(args.output)
    out.print(
        f"store round trip {model.hop_ms:.3f} ms, {model.bytes_per_ms / 1e6:.2f} GB/s; "
        f"per-slice overhead {model.invoke_ms:.3f} ms; tensors up to {model.inline_bytes // 1024} KiB inside "
        f"the calls at {model.call_bytes_per_ms / 1e6:.2f} GB/s; parallel efficiency of two sub-slices "
        f"{model.parallel_efficiency:.2f}"
    )
    for name, speed in model.codecs.items():
        out.print(
            f"  {name:16s} encode {speed.encode_bytes_per_ms / 1e6:6.2f} GB/s   "
            f"decode {speed.decode_bytes_per_ms / 1e6:6.2f} GB/s"
        )
    err.print(f"wrote {args.output}")
    return 0
