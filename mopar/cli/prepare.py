"""`mopar prepare`: what the prepare Job runs (fetch, profile, plan, slice, store)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from mopar.operator.prepare import main

    return main(args)
