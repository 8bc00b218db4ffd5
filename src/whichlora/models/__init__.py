"""Base models: bundled GGUF models converted once, local folders, and hub ids the user names."""

from whichlora.models.loading import LoadedModel, load_model, load_tokenizer, resolve_model_path

__all__ = ["LoadedModel", "load_model", "load_tokenizer", "resolve_model_path"]
