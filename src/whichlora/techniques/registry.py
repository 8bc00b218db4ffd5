"""The technique registry: the single list the CLI, docs and tests read.

Each technique lives in its own module under `techniques/methods/` (one per family where they
share a builder), holding its typed options, its config builder, its capacity knob and its
hooks. Adding a technique is one module (or one entry in its family's module) plus one line here;
the tests are parametrized over this list. The order is the order `whichlora techniques` lists.
"""

from __future__ import annotations

from whichlora.errors import WhichloraError
from whichlora.techniques.methods import (
    adalora,
    data_init,
    delora,
    dora,
    highrank,
    kasa,
    lora,
    lycoris,
    optimizers,
    spectral,
    structured,
    vera,
)
from whichlora.techniques.technique import Technique

BASELINE = lora.LORA.name  # what every technique is compared with unless a study says otherwise

TECHNIQUES: list[Technique] = [
    lora.LORA,
    lora.RSLORA,
    dora.DORA,
    vera.VERA,
    adalora.ADALORA,
    lora.PISSA,
    lora.OLORA,
    optimizers.LORAPLUS,
    lycoris.LOHA,
    lycoris.LOKR,
    lora.ORTHOGONAL,
    data_init.EVA,
    data_init.CORDA,
    data_init.LORAGA,
    kasa.KASA,
    optimizers.LORAFA,
    optimizers.RIEMANNIAN,
    structured.BDLORA,
    vera.PVERA,
    vera.VBLORA,
    vera.RANDLORA,
    highrank.HIRA,
    highrank.SHIRA,
    structured.MISS,
    delora.DELORA,
    structured.GRALORA,
    vera.TINYLORA,
    spectral.C3A,
    spectral.FOURIERFT,
    spectral.WAVEFT,
]

REGISTRY: dict[str, Technique] = {t.name: t for t in TECHNIQUES}


def get_technique(name: str) -> Technique:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WhichloraError(
            f"Unknown technique '{name}'. Fix: use one of {', '.join(REGISTRY)} "
            "(`whichlora techniques` lists them)."
        ) from None
