"""The package version, in a module of its own so that code inside the package can name it
without importing the package's top level (which re-exports the study API)."""

__version__ = "0.1.0"
