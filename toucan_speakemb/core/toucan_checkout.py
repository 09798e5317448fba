"""Running code of an IMS-Toucan checkout: the one rule for importing it and for its working folder.

Toucan is not an installed package. Its scripts run from the checkout, so its top-level folders
(``InferenceInterfaces``, ``Preprocessing``, ``Modules``, ...) are imported with the checkout first on
``sys.path``; here too, so that none of them is shadowed by an installed namesake. Those names are the same
in every release while the code behind them differs, so one process holds the code of one checkout: a
top-level package of the checkout already imported from elsewhere is refused before anything is imported.
An ``ImportError`` of the checkout's code (a requirement of Toucan's not installed) becomes one error line.

Some Toucan constructors read files relative to the working folder (``Models/...``): :func:`working_dir`.

Used by Toucan-native extraction (``extract/encoders.py``) and by the adapter (``adapters/``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional, Union

from toucan_speakemb.core.errors import SpeakEmbError

PathLike = Union[str, os.PathLike]


def checkout_root(toucan_dir: PathLike) -> Path:
    """The checkout's folder as it goes on ``sys.path``: absolute, symlinks kept (a view of a checkout made of
    symlinks is a checkout of its own)."""
    return Path(toucan_dir).expanduser().absolute()


def _loaded_from(module: ModuleType) -> Optional[Path]:
    where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or []), None)
    return Path(where).absolute() if where else None


def _top_level_names(root: Path) -> Iterator[str]:
    """The names the checkout's folders and modules are imported under."""
    for entry in root.iterdir():
        name = entry.stem if entry.suffix == ".py" else entry.name
        if (entry.is_dir() or entry.suffix == ".py") and name.isidentifier():
            yield name


def use_checkout(toucan_dir: PathLike) -> Path:
    """Make the checkout's code importable: first on ``sys.path`` (once), after checking that none of its
    top-level packages is already imported from another place. Returns the checkout's folder."""
    root = checkout_root(toucan_dir)
    if not root.is_dir():
        raise SpeakEmbError(f"Toucan checkout {root} does not exist")
    for name in _top_level_names(root):
        loaded = sys.modules.get(name)
        where = _loaded_from(loaded) if loaded is not None else None
        if where is not None and not where.is_relative_to(root):
            raise SpeakEmbError(f"another Toucan checkout's '{name}' ({where}) is already imported in this process; "
                                f"use one checkout per process")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


@contextlib.contextmanager
def checkout_code(toucan_dir: PathLike, label: str = "Toucan checkout") -> Iterator[Path]:
    """Inside: the checkout's code can be imported (:func:`use_checkout`), and an ``ImportError`` raised
    there becomes one error line naming the ``label`` (e.g. "Toucan v2.2 checkout") and what to install.
    Yields the checkout's folder."""
    root = use_checkout(toucan_dir)
    try:
        yield root
    except ImportError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpeakEmbError(f"the {label} {root} cannot be imported here ({first}); install what its "
                            f"requirements.txt lists") from None


def import_from_checkout(toucan_dir: PathLike, module: str, label: str = "Toucan checkout") -> ModuleType:
    """A module of the checkout by its dotted name (e.g. ``Preprocessing.AudioPreprocessor``)."""
    with checkout_code(toucan_dir, label):
        return importlib.import_module(module)


@contextlib.contextmanager
def working_dir(path: PathLike) -> Iterator[Path]:
    """Inside: ``path`` is the working folder (for Toucan code that reads ``Models/...`` relative to it); the
    previous one comes back after."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(old)
