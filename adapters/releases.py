"""The registry of IMS Toucan releases the adapter supports, and how a release is recognised.

A release is recognised from Toucan's own source, never from a flag: the interface class's method signatures
(and, where two releases share them, one line of its body) are read with :mod:`ast` — from the checkout's
interface file before anything is imported, or from the source file of an interface object's class. So a
checkout is named correctly (``v2.1``, ``v3.1.1``, ...) in errors and sidecars, and its models are looked
for where that release's own downloader writes them.

One module per Toucan family holds that family's releases (``toucan_v2.py``: v2.0–v2.2
``InferenceFastSpeech2``; ``toucan_v3.py``: v3.x ``ToucanTTSInterface``). Every module of this package whose
name starts with ``toucan_v`` is imported by :func:`releases` and registers its releases with
:func:`register`: **a new Toucan release is one new module** (``adapters/toucan_v4.py``, say) plus its tests,
or one more :class:`Release` in its family's module.

Releases whose conditioning space toucan-speakemb does not generate in are refused with the reason
(:data:`UNSUPPORTED`).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from toucan_speakemb.core.errors import SpeakEmbError

NO_DEFAULT = object()   # a parameter without a default
EXPRESSION = object()   # a default that is not a literal (e.g. os.path.join(...))

CLONE_HINT = "get one with `git clone --branch v3.1.2 https://github.com/DigitalPhonetics/IMS-Toucan` (or --branch v2.2)"


@dataclass
class Facts:
    """What a Toucan interface class says about itself: its methods' parameters (with literal defaults) and
    the assignments its ``forward`` makes from calls of its own attributes (``wave, _, _ = self.vocoder(...)``)."""

    cls: str
    methods: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    unpacked_calls: Dict[str, int] = field(default_factory=dict)  # attribute called in forward -> names assigned
    imports: Tuple[str, ...] = ()  # modules the interface's file imports

    def params(self, method: str) -> List[str]:
        return list(self.methods.get(method, {}))

    def default(self, method: str, param: str):
        return self.methods.get(method, {}).get(param, NO_DEFAULT)

    def imports_from(self, prefix: str) -> bool:
        return any(m == prefix or m.startswith(prefix + ".") for m in self.imports)


def _literal(node) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return EXPRESSION


def facts_from_source(text: str, cls: str, where: str) -> Facts:
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise SpeakEmbError(f"{where} cannot be parsed as Python ({e.msg}, line {e.lineno})") from None
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imports.append(node.module)
        elif isinstance(node, ast.Import):
            imports += [a.name for a in node.names]
    facts = Facts(cls, imports=tuple(imports))
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls]
    if not found:
        raise SpeakEmbError(f"{where} defines no class {cls}")
    for fn in found[0].body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        args = fn.args.args[1:] + fn.args.kwonlyargs
        defaults = [NO_DEFAULT] * (len(fn.args.args) - 1 - len(fn.args.defaults)) + [_literal(d) for d in fn.args.defaults]
        defaults += [NO_DEFAULT if d is None else _literal(d) for d in fn.args.kw_defaults]
        facts.methods[fn.name] = {a.arg: d for a, d in zip(args, defaults)}
        if fn.name == "forward":
            for node in ast.walk(fn):
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                        and isinstance(node.value.func, ast.Attribute)
                        and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id == "self"):
                    target = node.targets[0]
                    n = len(target.elts) if isinstance(target, ast.Tuple) else 1
                    facts.unpacked_calls[node.value.func.attr] = n
    return facts


def facts_from_file(path: Path, cls: str) -> Facts:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpeakEmbError(f"cannot read {path} ({e})") from None
    return facts_from_source(text, cls, str(path))


class Release:
    """One Toucan release: how to recognise it, where its models are, how to build and condition it.

    Family modules subclass this (the family's shared behaviour) and register one instance per release.
    """

    name: str = ""            # e.g. "v2.2"
    family: str = ""          # e.g. "v2"
    interface: str = ""       # the interface class, e.g. "InferenceFastSpeech2"
    interface_file: str = ""  # relative to the checkout
    profile: str = ""         # the conditioning space's profile (toucan_speakemb.core.profiles)
    sample_rate: int = 0
    language: str = ""        # the interface's default language code
    note: str = ""            # what marks this release apart from its neighbours (for docs and errors)

    def __init__(self, name: str, matches: Callable[[Facts], bool], note: str, **overrides):
        self.name, self._matches, self.note = name, matches, note
        for k, v in overrides.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"<Toucan {self.name} {self.interface}>"

    def title(self) -> str:
        return f"Toucan {self.name} {self.interface}"

    # ---- recognising -------------------------------------------------------------------------------------
    def checkout_layout(self, root: Path) -> bool:
        """The checkout has this family's layout (beyond the interface file)."""
        return True

    def matches(self, facts: Facts) -> bool:
        return facts.cls == self.interface and self._matches(facts)

    # ---- models --------------------------------------------------------------------------------------------
    def default_models(self, root: Path) -> Tuple[Optional[Path], Optional[Path]]:
        """Where this release's own downloader puts the TTS model and the vocoder."""
        raise NotImplementedError

    def models_help(self) -> str:
        raise NotImplementedError

    def build(self, root: Path, tts: Path, vocoder: Path, device: str, language: Optional[str]):
        """The checkout's own interface on these model files (called with the checkout's code importable,
        :func:`toucan_speakemb.core.toucan_checkout.checkout_code`)."""
        raise NotImplementedError

    def environment_problem(self) -> Optional[str]:
        """Why this release cannot run in this Python environment (None: it can); checked before any work."""
        return None

    def build_failure_hint(self, root: Path) -> str:
        """What to add to the error line when building the interface failed (e.g. a model Toucan downloads)."""
        return ""

    # ---- conditioning ----------------------------------------------------------------------------------------
    def inject(self, interface, embedding, noise_profiles: dict) -> None:
        """Make ``embedding`` (a float tensor of the model's width) the interface's utterance embedding;
        ``noise_profiles`` is the adapter's store for what a release computes once per voice."""
        raise NotImplementedError

    def read_output(self, out) -> Tuple[Any, int]:
        """(wave, sample rate) from what ``forward`` returned."""
        raise NotImplementedError

    def before_utterance(self, interface) -> None:
        """Called before every utterance: whatever the release needs so that an utterance depends on its own
        text, voice and seed only, not on what the interface said before. Nothing by default."""

    # ---- random-weight models (tests, benchmarks) ------------------------------------------------------------
    def build_random(self, folder: Path, seed: int = 0, small: bool = False) -> Tuple[Path, Path]:
        raise NotImplementedError

    def offline_files(self, folder: Path) -> None:
        """Files an offline view of the checkout needs besides SpeechBrain's ECAPA (see random_toucan)."""


_REGISTRY: List[Release] = []

# Releases (and their layout markers) that condition on a space toucan-speakemb does not generate in.
UNSUPPORTED: Sequence[Tuple[str, str]] = (
    ("InferenceInterfaces/FastSpeech2Interface.py",
     "Toucan v2.3 conditions on its own 128-dim style embedding, not on ECAPA or ECAPA + x-vector"),
    ("InferenceInterfaces/PortaSpeechInterface.py",
     "Toucan v2.4/v2.b condition on their own 64-dim style embedding, not on ECAPA or ECAPA + x-vector"),
    ("InferenceInterfaces/InferenceArchitectures/InferenceToucanTTS.py",
     "Toucan v2.5/v2.b condition on their own 64-dim style embedding, not on ECAPA or ECAPA + x-vector"),
)


def register(*releases: Release) -> None:
    for r in releases:
        if any(r.name == o.name for o in _REGISTRY):
            raise ValueError(f"Toucan release {r.name} registered twice")
        _REGISTRY.append(r)


def releases() -> List[Release]:
    """Every supported release, from the ``toucan_v*`` modules of this package."""
    package = __name__.rsplit(".", 1)[0]
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if m.name.startswith("toucan_v"):
            importlib.import_module(f"{package}.{m.name}")
    return list(_REGISTRY)


def supported_names() -> str:
    return ", ".join(f"{r.name} ({r.interface}, {r.profile})" for r in releases())


def _one(found: List[Release], what: str) -> Release:
    if len(found) > 1:  # two releases claiming one source is a bug of the registry, not of the user's input
        raise AssertionError(f"{what} matches several Toucan releases: {', '.join(r.name for r in found)}")
    return found[0]


def release_of_checkout(root: Path) -> Release:
    """The release a checkout holds, from its files; its real reason when it is one we do not support."""
    found, seen = [], {}
    for r in releases():
        f = root / r.interface_file
        if f.is_file() and r.checkout_layout(root):
            key = (r.interface_file, r.interface)
            if key not in seen:
                seen[key] = facts_from_file(f, r.interface)
            if r.matches(seen[key]):
                found.append(r)
    if found:
        return _one(found, str(root))
    for marker, reason in UNSUPPORTED:
        if (root / marker).is_file():
            raise SpeakEmbError(f"{root} is not supported: {reason} (supported: {supported_names()})")
    if seen:
        names = ", ".join(sorted({k[1] for k in seen}))
        raise SpeakEmbError(f"{root} holds a Toucan {names} of a release this adapter does not know (supported: "
                            f"{supported_names()})")
    raise SpeakEmbError(f"{root} is not an IMS-Toucan checkout of a supported release (supported: "
                        f"{supported_names()}); {CLONE_HINT}")


def release_of_interface(interface) -> Release:
    """The release an interface object belongs to, from the source of its class (or the Toucan class it
    derives from)."""
    name = type(interface).__name__
    if not hasattr(interface, "set_utterance_embedding") or not hasattr(interface, "default_utterance_embedding"):
        raise SpeakEmbError(f"{name} is not a Toucan inference interface (no set_utterance_embedding / "
                            f"default_utterance_embedding)")
    known = {r.interface for r in releases()}
    for cls in type(interface).__mro__:
        if cls.__name__ not in known:
            continue
        try:
            source = inspect.getsource(inspect.getmodule(cls))
        except (OSError, TypeError):
            raise SpeakEmbError(f"the source of {cls.__name__} cannot be read, so its Toucan release cannot be "
                                f"told") from None
        facts = facts_from_source(source, cls.__name__, f"{cls.__module__}.{cls.__name__}")
        found = [r for r in releases() if r.matches(facts)]
        if found:
            return _one(found, f"{cls.__module__}.{cls.__name__}")
        if facts.imports_from("TrainingInterfaces.Spectrogram_to_Embedding.StyleEmbedding"):
            raise SpeakEmbError(f"{name} is a Toucan v2.5/v2.b interface, which conditions on its own 64-dim style "
                                f"embedding (supported: {supported_names()})")
    raise SpeakEmbError(f"{name} is a Toucan interface this adapter does not know (supported: {supported_names()})")
