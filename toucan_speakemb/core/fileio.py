"""Atomic, pickle-free file writing and reading (safetensors for tensors, JSON for everything else).

Every writer goes through :func:`atomic_write_bytes`: the bytes land in a temporary file in the target's
folder and are renamed into place, so a killed process leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError

META_KEY = "toucan_speakemb"



def utc_timestamp() -> str:
    """The time stamp the project writes into provenance and sidecars: UTC, ISO 8601, to the second."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A file written in place of ``path`` all at once: bytes go to a temporary file in the same folder, which
    is renamed over ``path`` when the ``with`` block ends without an error (and removed when it fails), so a
    killed process leaves either the old file or the complete new one."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; written files get the usual mode
            self.file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        return self

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def finish(self) -> None:
        """Called before the rename; streamed writers check there that everything promised was written."""

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.finish()
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return False


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    with AtomicFile(path) as f:
        f.write(data)
    return Path(path)


class _StreamedRows(AtomicFile):
    """An atomic file whose last (or only) array, of ``rows`` rows, arrives in chunks through :meth:`rows`."""

    def __init__(self, path, n_rows: int, row_bytes: int):
        super().__init__(path)
        self.n_rows, self.row_bytes, self.done = int(n_rows), int(row_bytes), 0

    def rows(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x)
        if x.nbytes != len(x) * self.row_bytes or self.done + len(x) > self.n_rows:
            raise ValueError(f"{self.path}: rows of {x.nbytes // max(len(x), 1)} bytes, or more than {self.n_rows}")
        self.write(x.tobytes())
        self.done += len(x)

    def finish(self) -> None:
        if self.done != self.n_rows:
            raise ValueError(f"{self.path}: {self.done} of {self.n_rows} rows written")


class StreamedTensors(_StreamedRows):
    """A :func:`save_tensors` file written chunk by chunk: ``fixed`` arrays (in memory) first, then the
    ``name`` array of ``shape`` and ``dtype`` row block by row block (:meth:`rows`), so a large file never has
    to be in memory at once. Read back with :func:`load_tensors` like any other."""

    _DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.float64): "F64",
               np.dtype(np.int32): "I32"}

    def __init__(self, path, fixed: Mapping[str, np.ndarray], name: str, shape: Tuple[int, ...], dtype,
                 meta: Mapping[str, Any]):
        dtype = np.dtype(dtype)
        super().__init__(path, shape[0], int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        header: Dict[str, Any] = {"__metadata__": {META_KEY: json.dumps(meta)}}
        self.fixed = {k: np.ascontiguousarray(v) for k, v in fixed.items()}
        start = 0
        for key, arr in [*self.fixed.items(), (name, np.empty((0,), dtype))]:
            size = arr.nbytes if key != name else self.n_rows * self.row_bytes
            header[key] = {"dtype": self._DTYPES[arr.dtype], "shape": list(arr.shape if key != name else shape),
                           "data_offsets": [start, start + size]}
            start += size
        text = json.dumps(header, separators=(",", ":")).encode()
        self.header = text + b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it

    def __enter__(self):
        super().__enter__()
        self.write(len(self.header).to_bytes(8, "little") + self.header)
        for arr in self.fixed.values():
            self.write(arr.tobytes())
        return self


class StreamedNpy(_StreamedRows):
    """A bare ``.npy`` array of ``shape`` and ``dtype`` written chunk by chunk (:meth:`rows`), atomically."""

    def __init__(self, path, shape: Tuple[int, ...], dtype):
        dtype = np.dtype(dtype)
        super().__init__(path, shape[0], int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        self.header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}

    def __enter__(self):
        super().__enter__()
        np.lib.format.write_array_header_1_0(self.file, self.header)
        return self


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


def check_output(path: os.PathLike | str, suffixes: Sequence[str], *, overwrite: bool = False,
                 option: str = "--out", what: str = "output", make_parent: bool = False,
                 companions: Iterable[os.PathLike | str] = ()) -> Path:
    """The one rule for a file a command writes, checked before any work starts (one line on failure).

    - its name ends in one of ``suffixes`` (what is written decides the extension, never the other way);
    - it does not exist yet, nor do its ``companions`` (files written beside it), unless ``overwrite``;
    - its folder exists (``make_parent``: is created, only where a command's help says so);
    - it can be written (no file where a folder must be, a writable folder).
    The write itself then goes through :func:`atomic_write_bytes`."""
    path = Path(path)
    name = path.name.lower()
    if not any(name.endswith(s) for s in suffixes) or any(name == s for s in suffixes):
        raise SpeakEmbError(f"{option} {path}: {what} is written as {' or '.join(suffixes)}; "
                            f"name it e.g. {path.stem or 'out'}{suffixes[0]}")
    check_writable(path)
    if not overwrite:
        for p in (path, *map(Path, companions)):
            if p.exists():
                raise SpeakEmbError(f"{p} exists; pass --overwrite to replace it")
    if not path.parent.is_dir() and not make_parent:
        raise SpeakEmbError(f"{option} {path}: folder {path.parent} does not exist (make it first)")
    return path


def check_output_folder(path: os.PathLike | str, files: Iterable[str] = (), *, overwrite: bool = False,
                        option: str = "--out", resume_marker: Optional[str] = None) -> Path:
    """The same rule for a command's output folder: it is made if missing, but its parent must exist; the
    ``files`` the command writes in it must not exist yet unless ``overwrite``. ``resume_marker``: a folder
    holding that file is the command's own, to be continued (its documented resume mode); any other non-empty
    folder is refused, so a command never mixes its files into someone else's."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SpeakEmbError(f"{option} {path} is a file, expected a folder")
    check_writable(path / "_")
    if not path.exists():
        if not path.parent.is_dir():
            raise SpeakEmbError(f"{option} {path}: folder {path.parent} does not exist (make it first)")
        return path
    if resume_marker is not None:
        if not (path / resume_marker).exists() and any(path.iterdir()):
            raise SpeakEmbError(f"{option} {path} is a folder of other files (no {resume_marker}); "
                                f"give a new or empty folder")
        return path
    if not overwrite:
        for f in files:
            if (path / f).exists():
                raise SpeakEmbError(f"{path / f} exists; pass --overwrite to replace it")
    return path


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
