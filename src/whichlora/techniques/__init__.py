"""LoRA techniques: one registry entry each, all adapters from peft."""

from whichlora.techniques.registry import BASELINE, REGISTRY, get_technique
from whichlora.techniques.technique import AdapterSettings, Technique

__all__ = ["BASELINE", "REGISTRY", "AdapterSettings", "Technique", "get_technique"]
