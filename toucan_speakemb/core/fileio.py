"""Atomic, pickle-free file writing and reading (safetensors for tensors, JSON for everything else).

Every writer goes through :func:`atomic_write_bytes`: the bytes land in a temporary file in the target's
folder and are renamed into place, so a killed process leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError

META_KEY = "toucan_speakemb"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; written files get the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_writable(path: os.PathLike | str) -> None:
    """Refuse early, with one line, an output path that cannot be written (a file where a folder must be)."""
    path = Path(path)
    if path.is_dir():
        raise SpeakEmbError(f"output {path} is a folder, expected a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SpeakEmbError(f"cannot write {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise SpeakEmbError(f"cannot write {path}: {parent} is not writable")
            return


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: os.PathLike | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(path: os.PathLike | str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write numpy arrays and a JSON-able metadata dict into one safetensors file, atomically."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    blob = save(arrays, metadata={META_KEY: json.dumps(meta)})
    return atomic_write_bytes(path, blob)


def load_tensors(path: os.PathLike | str, what: str = "file", kind: Optional[str] = None,
                 format_version: Optional[int] = None) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; any problem becomes one clear SpeakEmbError.

    ``kind`` / ``format_version``: the file must say it is that kind (the ``kind`` metadata key), of a format
    no newer than ``format_version`` (files of a newer release are refused by name, not misread)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise SpeakEmbError(f"{what} not found: {path}")
    if path.is_dir():
        raise SpeakEmbError(f"{what} {path} is a folder, expected a file")
    if path.stat().st_size == 0:
        raise SpeakEmbError(f"{what} {path} is empty")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw_meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for damaged headers and truncated data
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpeakEmbError(f"{what} {path} is damaged or not a safetensors file ({first})") from None
    if META_KEY not in raw_meta:
        raise SpeakEmbError(f"{what} {path} was not written by toucan-speakemb (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(raw_meta[META_KEY])
    except json.JSONDecodeError as e:
        raise SpeakEmbError(f"{what} {path} has damaged metadata ({e.msg})") from None
    if kind is not None and meta.get("kind") != kind:
        raise SpeakEmbError(f"{path} is a '{meta.get('kind')}' file, not a {what}")
    if format_version is not None and (not isinstance(meta.get("format_version"), int)
                                       or meta["format_version"] > format_version):
        raise SpeakEmbError(f"{path} has {kind} format {meta.get('format_version')!r}; "
                            f"this version reads up to {format_version}")
    return arrays, meta


def read_json(path: os.PathLike | str, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise SpeakEmbError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpeakEmbError(f"cannot read {what} {path} ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpeakEmbError(f"{what} {path} is not valid JSON ({e})") from None


def check_finite(x: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=-1).sum()) if x.ndim > 1 else int((~np.isfinite(x)).sum())
        raise SpeakEmbError(f"{what} contains NaN or infinite values ({bad} rows affected)")
