"""Environment checks, and the one repair the project knows how to make: torchaudio's compiled extension.

SpeechBrain imports torchaudio unconditionally. PyPI's torchaudio wheels for x86-64 are built against a
CUDA torch; beside a CPU-only torch their extension fails to load (``libc10_cuda.so: cannot open shared
object file``) and ``import torchaudio`` raises. torchaudio loads its extension only when the library files
exist, and everything toucan-speakemb and SpeechBrain's speaker encoders use from it is pure Python, so the
repair is to rename the extension files out of the way (``*.so`` -> ``*.so.disabled``; reversible with
``--undo``). Nothing is changed when torchaudio already imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

DISABLED_SUFFIX = ".disabled"


def _torchaudio_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "lib"


def torchaudio_import_error() -> str | None:
    """Try ``import torchaudio`` in a fresh interpreter (a failed import can't be undone in this one)."""
    r = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {r.returncode}"


def repair_torchaudio(undo: bool = False) -> Tuple[str, List[Path]]:
    """Disable (or, with ``undo``, re-enable) torchaudio's compiled extension when it cannot load."""
    lib = _torchaudio_lib_dir()
    if lib is None:
        return "torchaudio is not installed; nothing to do", []
    if undo:
        moved = []
        for f in sorted(lib.glob("*.so" + DISABLED_SUFFIX)):
            target = f.with_name(f.name[: -len(DISABLED_SUFFIX)])
            f.rename(target)
            moved.append(target)
        return f"re-enabled {len(moved)} torchaudio extension file(s)", moved
    err = torchaudio_import_error()
    if err is None:
        return "torchaudio imports; nothing to repair", []
    moved = []
    for f in sorted(lib.glob("*.so")):
        target = f.with_name(f.name + DISABLED_SUFFIX)
        f.rename(target)
        moved.append(target)
    after = torchaudio_import_error()
    if after is not None:
        for f in moved:  # put things back: the repair did not help, so it must not stay
            f.rename(f.with_name(f.name[: -len(DISABLED_SUFFIX)]))
        return f"torchaudio still fails to import after disabling its extension: {after}", []
    return (f"torchaudio's compiled extension could not load ({err}); disabled {len(moved)} file(s), "
            f"torchaudio now imports as pure Python", moved)


def torchaudio_build_note() -> str | None:
    """What is wrong with the torchaudio beside this torch, read from its files without importing it: an
    extension built against CUDA beside a CPU-only torch, or a release made for another torch."""
    lib = _torchaudio_lib_dir()
    if lib is None:
        return None
    try:
        import importlib.metadata as md

        import torch

        ta_version = md.version("torchaudio")
    except Exception:  # a diagnostic: what cannot be read is not reported
        return None
    notes = []
    cuda_built = "+cu" in ta_version or any(b"libc10_cuda.so" in f.read_bytes()
                                            for f in sorted(lib.glob("*.so*")) if f.is_file())
    if cuda_built and torch.version.cuda is None:
        disabled = any(lib.glob("*.so" + DISABLED_SUFFIX)) and not any(lib.glob("*.so"))
        notes.append("its compiled extension is built for CUDA, beside a CPU-only torch "
                     + ("(disabled by --repair-torchaudio: pure Python in use)" if disabled
                        else "(run: toucan-speakemb doctor --repair-torchaudio)"))
    ta_minor = ta_version.split("+")[0].split(".")[:2]
    torch_minor = torch.__version__.split("+")[0].split(".")[:2]
    if ta_minor != torch_minor:
        notes.append(f"it is the release for torch {'.'.join(ta_minor)}, not {'.'.join(torch_minor)}")
    return "; ".join(notes) or None


def report() -> List[Tuple[str, str]]:
    import logging

    # SpeechBrain logs INFO lines on import ("Applied quirks ..."); a report shows versions only
    for name in ("speechbrain", "speechbrain.utils.quirks"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rows = [("python", sys.version.split()[0])]
    for mod in ("torch", "torchaudio", "speechbrain", "numpy", "safetensors", "soundfile"):
        if mod == "torchaudio":
            err = torchaudio_import_error()
            if err is not None:
                rows.append((mod, f"FAILS TO IMPORT: {err} (run: toucan-speakemb doctor --repair-torchaudio)"))
                continue
        try:
            m = importlib.import_module(mod)
            version = getattr(m, "__version__", "?")
            note = torchaudio_build_note() if mod == "torchaudio" else None
            rows.append((mod, version + (f"  WARNING: {note}" if note else "")))
        except Exception as e:  # report, don't crash: this is a diagnostic
            rows.append((mod, f"FAILS TO IMPORT: {type(e).__name__}: {e}"))
    return rows
