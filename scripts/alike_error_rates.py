"""Print how often the alike statistic answers alike / differs / cannot tell per simulated scenario.

    PYTHONPATH=src python scripts/alike_error_rates.py [--sims 500] [--seed 0] [--truth]

The simulator and scenarios live in tests/alike_sim.py; `--truth` also measures each scenario's
population value of the quantity (slow: large simulated studies).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from alike_sim import SCENARIOS, rates, truth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truth", action="store_true")
    args = parser.parse_args()
    print(f"{args.sims} simulated studies per scenario, alpha 0.05, margin 0.01 (CKA)")
    print("| scenario | seeds | tests per study | theta | alike | differs | cannot tell | "
          "studies with any differs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, sc in SCENARIOS.items():
        start = time.time()
        r = rates(sc, args.sims, seed=args.seed)
        null = sc.shift == 0 and sc.noise_t is None
        theta = "0" if null else (f"{truth(sc):.4f}" if args.truth else "?")
        print(f"| {name} | {sc.seeds} | {sc.layers * sc.techniques} | {theta} | "
              f"{r['alike']:.3f} | {r['differs']:.3f} | {r['cannot tell']:.3f} | "
              f"{r['any_differs']:.3f} |", flush=True)  # fmt: skip
        print(f"  ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    print("theta: the population excess 1 - CKA over LoRA's seed floor. Nulls (theta 0): differs "
          "is the false-positive rate. theta > margin: alike is false equivalence, differs power;"
          " 0 < theta < margin: alike is power.")  # fmt: skip


if __name__ == "__main__":
    main()
