"""Print false-positive rate, power and false-equivalence rate of `judge` per simulated scenario.

    PYTHONPATH=src python scripts/verdict_error_rates.py [--sims 1000] [--seed 0]

The simulator and scenarios live in tests/verdict_sim.py and tests/verdict_scenarios.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from verdict_scenarios import SCENARIOS  # noqa: E402
from verdict_sim import error_rates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.sims} simulated studies per scenario, alpha 0.05, margin 0.02 (nll)")
    print(f"| {'scenario':40} | true diff | better | worse | equiv | inconclusive | worst "
          "technique's better+worse |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, sc in SCENARIOS.items():
        start = time.time()
        rates = error_rates(sc, args.sims, seed=args.seed)
        techs = [t for t in sc.effects if t != "lora"]
        share = {v: sum(rates[f"{t}:{v}"] for t in techs) / len(techs)
                 for v in ("better", "worse", "equivalent", "inconclusive")}  # fmt: skip
        diff = sc.effects[techs[0]]
        worst = max(rates[f"{t}:better"] + rates[f"{t}:worse"] for t in techs)
        print(f"| {name:40} | {diff:.3f} | {share['better']:.3f} | {share['worse']:.3f} | "
              f"{share['equivalent']:.3f} | {share['inconclusive']:.3f} | {worst:.3f} |",
              flush=True)  # fmt: skip
        print(f"  ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    print("better = lower nll. null_*: better+worse is the false-positive rate; effect rows: the "
          "right direction is power, equiv is false equivalence.")  # fmt: skip


if __name__ == "__main__":
    main()
