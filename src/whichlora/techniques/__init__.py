"""LoRA techniques: one registry entry each, all adapters from peft."""

from whichlora.techniques.registry import REGISTRY, AdapterSettings, Technique, get_technique

__all__ = ["REGISTRY", "AdapterSettings", "Technique", "get_technique"]
