"""`python -m bench [NAME...]`: run benchmarks (all by default), print their tables, and write
`bench/results/<name>.json`. Exit status 1 when a target was missed, 2 when a benchmark could
not run (e.g. the registry binary is missing)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from bench import (
    attack,
    cli_scale,
    coalesce,
    cold,
    common,
    evaluator,
    instructions,
    memory,
    shared,
    signatures,
    soak,
    walk,
    webhook,
)
from bench.env import Unavailable

BENCHMARKS: dict[str, Callable[[], common.Result]] = {
    "webhook": webhook.run,
    "instructions": instructions.run,
    "cold": cold.run,
    "coalesce": coalesce.run,
    "memory": memory.run,
    "cli_scale": cli_scale.run,
    "evaluator": evaluator.run,
    "soak": soak.run,
    "attack": attack.run,
    "walk": walk.run,
    "signatures": signatures.run,
    "shared": shared.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    info = common.machine()
    print(f"machine: {info}\n")
    status = 0
    for name in names:
        started = time.perf_counter()
        try:
            result = BENCHMARKS[name]()
        except Unavailable as exc:
            print(f"== {name}: not run: {exc}\n")
            status = max(status, 2)
            continue
        path = common.write_result(result, f"python -m bench {name}")
        print(result.render())
        print(f"\n({time.perf_counter() - started:.1f} s; results in {path})\n")
        if not result.met:
            status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
