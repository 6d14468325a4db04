"""What loading the code location costs: ``import cloudwaste_pipeline.definitions`` beside
``import dagster, pandas, sqlalchemy``.

Every run and every step process imports the definitions, so whatever they import at load is
paid again per process. The reference is the three libraries the definitions cannot do without;
the target is at most 1.5 times their cost. Each import runs in a fresh interpreter, the two
alternating (so a machine that gets busier slows both), and is measured as the child's user +
system CPU (not wall time, which on a busy machine counts other processes' turns). One untimed
run of each first writes the bytecode caches, as an installed package has them (pip compiles at
install): the children run without ``PYTHONDONTWRITEBYTECODE``, else our modules would be
compiled again in every run and counted as loading cost.

    python -m benchmarks.import_cost [--runs 5] [--root CHECKOUT]

``--root`` measures another checkout (``python -c`` puts the working directory first on the
path, so its package is imported, whatever is installed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

BASELINE = "import dagster, pandas, sqlalchemy"
DEFINITIONS = "import cloudwaste_pipeline.definitions"
TARGET = 1.5


def cpu_seconds(statement: str, root: Path) -> float:
    """User + system CPU of a fresh interpreter that runs ``statement`` in ``root``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-c", statement], cwd=root, env=env, capture_output=True, text=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{statement!r} failed in {root}:\n{done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each import")
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout"
    )
    args = parser.parse_args()
    cpu_seconds(BASELINE, args.root)
    cpu_seconds(DEFINITIONS, args.root)
    baseline, definitions = [], []
    for run in range(1, args.runs + 1):
        baseline.append(cpu_seconds(BASELINE, args.root))
        definitions.append(cpu_seconds(DEFINITIONS, args.root))
        print(f"run {run}: {BASELINE} {baseline[-1]:.2f} s, {DEFINITIONS} {definitions[-1]:.2f} s")
    reference, ours = statistics.median(baseline), statistics.median(definitions)
    ratio = ours / reference
    print(
        f"median CPU (user + sys): {BASELINE} {reference:.2f} s "
        f"({min(baseline):.2f}-{max(baseline):.2f}), {DEFINITIONS} {ours:.2f} s "
        f"({min(definitions):.2f}-{max(definitions):.2f})"
    )
    print(f"ratio {ratio:.2f}x, target <= {TARGET}x: {'PASS' if ratio <= TARGET else 'MISS'}")


if __name__ == "__main__":
    main()
