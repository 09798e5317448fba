"""The package version, in a module of its own so that every layer can name it without importing the
package's public ``__init__`` (which would import the layers above)."""

__version__ = "0.1.0"
