"""Training configuration: every hyperparameter of a run, read from YAML, checked key by key.

A recipe YAML may set any subset of these keys; the rest keep the defaults below, which are the project's
default recipe (``recipes/default/hparams.yaml`` spells them out; a test keeps the two equal). The run folder gets the full resolved
config as ``config.yaml``. Unknown keys and wrong types are errors, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from toucan_speakemb.core.distributed import check_device_name
from toucan_speakemb.core.errors import SpeakEmbError

DATA_LEVELS = ("speaker", "balanced", "utterance")


@dataclass
class DataConfig:
    # speaker: one vector per training speaker (its mean); balanced: utterances drawn so that every speaker
    # weighs the same; utterance: every utterance once per epoch (the source presentation's setting).
    level: str = "speaker"
    # Optional path of the training data (the CLI's --data wins); "builtin:synthetic" is the embedded default.
    path: Optional[str] = None
    min_utterances: int = 1  # speakers with fewer utterances are left out


@dataclass
class DiffusionConfig:
    timesteps: int = 1000
    schedule: str = "cosine"
    beta_start: float = 1.0e-5  # linear / quadratic / sigmoid only
    beta_end: float = 1.0e-2
    prediction: str = "v"
    loss: str = "l2"
    variance: str = "small"  # ancestral sampling: posterior variance β̃ ("small") or β ("large")


@dataclass
class ModelConfig:
    kind: str = "resmlp"  # resmlp (default) | fc3 (the source's three-layer network)
    hidden: int = 256  # the network's width; with a principal subspace, at most this (hidden_per_64_dims)
    # with a principal subspace: hidden_per_64_dims units for every 64 directions (or part of 64) the network
    # sees, at most `hidden` (0: always `hidden`): the demo's 540 training rows -> 34 directions -> 128 units, which
    # overfit later and train 2.5x faster per step than 256; 1800 speakers -> 112 -> 256 (docs/benchmarks.md)
    hidden_per_64_dims: int = 128
    blocks: int = 3
    expansion: int = 2
    time_dim: int = 128
    dropout: float = 0.0
    # add the network to the exact prediction for a Gaussian fit of the data
    # (see toucan_speakemb/diffusion/denoisers.py)
    gaussian_residual: bool = True
    # attributes the model learns as conditions (classifier-free guidance; see toucan_speakemb/training/conditions.py):
    # gender, age (as bands), accent, or the name of a label column of the embedding set. Empty: unconditional
    conditions: List[str] = field(default_factory=list)
    # conditional Gaussian-residual models: the Gaussian part's mean moves per condition value (exact under
    # guidance); False: conditions act through the network's correction only
    condition_gaussian: bool = True
    # edges (years) of the age bands used when 'age' is a condition: 25,35,50,65 -> under25, 25-34, ..., 65plus
    age_bands: List[float] = field(default_factory=lambda: [25.0, 35.0, 50.0, 65.0])
    # with gaussian_residual: which principal directions of the training rows the network sees and corrects.
    # "scaled" (default): the top k = (rows it learns from) / subspace_rows_per_dim, at least subspace_dims,
    # all d once k >= d (a narrow network learns more from a few thousand speakers, a full one more from tens
    # of thousands: docs/benchmarks.md); "full": all d; "fixed": k = subspace_dims; "auto": k by held-out PPCA
    # likelihood (toucan_speakemb/diffusion/subspace.py)
    subspace: str = "scaled"
    subspace_rows_per_dim: int = 16
    subspace_dims: int = 32
    # the directions outside the subspace: "full" (the Gaussian fit's own variances: at step 0 the model is
    # the same Gaussian as without a subspace) or "isotropic" (one pooled variance: probabilistic PCA)
    subspace_rest: str = "full"

    def width(self, directions: Optional[int]) -> int:
        """The network's width when it sees ``directions`` principal directions (None: every dimension)."""
        if directions is None or not self.hidden_per_64_dims:
            return self.hidden
        return min(self.hidden, self.hidden_per_64_dims * math.ceil(directions / 64))

    def options(self, directions: Optional[int] = None) -> Dict[str, Any]:
        hidden = self.width(directions)
        if self.kind == "fc3":
            return {"hidden": hidden}
        return {"hidden": hidden, "blocks": self.blocks, "expansion": self.expansion,
                "time_dim": self.time_dim, "dropout": self.dropout}


@dataclass
class NormalizationConfig:
    standardize: bool = True  # transform the data to unit scale (stored with the model); False: raw data
    # standard: per-dimension mean/std; quantile: empirical CDF -> normal per dimension, then mean/std
    # (generated values stay inside each dimension's training range; see toucan_speakemb/diffusion/standardize.py)
    transform: str = "auto"
    # auto: quantile when some dimension has a point mass (one value in at least point_mass_share of the
    # training rows, e.g. the exact zeros of ReLU encoders such as GE2E), else standard
    point_mass_share: float = 0.05
    # map vector lengths through their empirical distribution (see toucan_speakemb/diffusion/standardize.py): generated lengths stay
    # inside the training range; for encoders with (nearly) fixed-length vectors
    radial: bool = False
    # polar: direction and length modelled apart (toucan_speakemb/diffusion/standardize.py); lengths stay in the training range.
    # "auto": on when the training rows' lengths vary by at most polar_max_spread (std / mean), i.e. for
    # encoders with (nearly) fixed-length vectors; "always" / "never" force it. Excludes radial.
    polar: str = "auto"
    polar_max_spread: float = 0.02
    # clip every generated value to its dimension's training range (toucan_speakemb/diffusion/standardize.py).
    # "auto": on with the standard transform when some dimension has a point mass (an encoder with floors such
    # as ReLU zeros; the quantile transform keeps values in range by itself); "always" / "never" force it
    clip: str = "auto"
    n_quantiles: int = 1000
    min_std: float = 1.0e-4   # floor for dimensions that are (nearly) constant in the training data


@dataclass
class TrainLoopConfig:
    steps: int = 5000  # the cosine learning-rate schedule spans them (select "best": at most; patience may stop sooner)
    batch_size: int = 256
    lr: float = 2.0e-3
    lr_schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # the cap of the EMA's decay, which ramps up as (1 + t) / (10 + t) (trainer.ema_decay_at)
    ema_decay: float = 0.999
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    # CPU threads, torch's and numpy's (core.threads.cpu_threads), for the run and put back after it. 1 by
    # default: these small networks gain little from more, and two jobs with a thread per core on one machine
    # slow each other several-fold (None: as torch and numpy choose)
    threads: Optional[int] = 1
    # torch device of the model, the batches, the noise and the EMA: auto (cuda:LOCAL_RANK when this torch sees
    # CUDA, else cpu), cpu, cuda or cuda:<i>. The checkpoints and the generator hold CPU tensors whatever it is
    device: str = "auto"
    # conditional models: probability that a row's conditions are all replaced by the null token (the
    # unconditional model of classifier-free guidance); otherwise each is replaced with this probability alone
    p_uncond: float = 0.1
    # model selection on validation speakers (a share of the training speakers the loop never draws): every
    # validate_every steps the EMA weights are scored by their denoising loss on them (fixed noise levels and
    # noise); the generator keeps the weights ``select`` says (step 0 = the untrained model, i.e. the Gaussian
    # fit with the Gaussian-residual denoiser). patience > 0 stops after that many scores without a new best,
    # and never sooner than the EMA's memory (1 / (1 - ema_decay) steps) after it.
    validation_share: float = 0.1
    validate_every: int = 250
    patience: int = 6
    # the weights kept: "best" (of the best validation score) | "last" (the final weights, unless no score beat
    # step 0's, the Gaussian fit: then step 0, and patience ends such a run as with "best")
    select: str = "last"
    # select "last" on data the network overfits: a score more than this share above the best one ends the run
    # (no sooner than the EMA's memory after the best); then the best-scoring and the final weights are judged
    # by their voices against the validation speakers and the better are kept (trainer.keep_better_voices)
    # (measured: +3 % at the end on 2000 espeak speakers, where the final weights sample better; +60 % on the
    # demo's 600 speakers, where they copy training speakers)
    overfit_tolerance: float = 0.05


SLIDER_METHODS = ("latent", "renoise")


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # a name of diffusion.samplers.SAMPLERS: ddim (fast, deterministic) | ancestral
    steps: int = 10        # ddim steps (the exact Gaussian step keeps few steps accurate)
    eta: float = 0.0
    batch_size: int = 4096
    # classifier-free guidance of conditional samples: 0 = unconditional, 1 = plain conditional, >1 stronger
    guidance: float = 1.5
    # autoguidance with the Gaussian fit as the weaker model: prediction = Gaussian + autoguidance x the
    # network's correction (1: the model as trained; above 1: its departures from the Gaussian amplified).
    # Models without a Gaussian part (model.gaussian_residual false) have nothing to guide with: no effect
    autoguidance: float = 1.3
    # the directions outside the network's principal subspace (where the Gaussian fit is exact: the scatter no
    # model of the speakers explains) sample at this x the temperature. Below 1 the temperature chosen at
    # training then spreads the modelled directions further at the same novelty: on the demo's data recall at
    # matched novelty +0.09-0.12 for precision -0.03 to -0.06 (docs/benchmarks.md). 1: one temperature for every
    # direction.
    # Not applied to the Gaussian fit itself (a run that keeps step 0)
    rest_temperature: float = 0.7
    # the directions the network models: their initial noise is scaled so that the voices' variance along each
    # moves this far (in log-variance) towards the training speakers': the network shrinks some of them (the
    # EMA's averaging, autoguidance) and spreads others. 0: not at all; 1: the whole way. Measured at
    # temperature 1 when the run ends, stored with the temperature when one is chosen (none chosen: plain
    # sampling). Not applied to the Gaussian fit itself
    variance_correction: float = 0.5
    # sliders: latent = move the voice's noise x_T and decode it again (found by DDIM inversion when the voice
    # was not sampled with the deterministic DDIM); renoise = move the voice, re-noise it to slider_strength x T
    # and denoise (SDEdit)
    slider_method: str = "latent"
    slider_inversion_steps: int = 100
    slider_strength: float = 0.3


@dataclass
class TrainConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    # ---- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = "config") -> "TrainConfig":
        cfg = _build(cls, d or {}, source, "")
        cfg.check(source)
        return cfg

    def resuming(self, stored: Dict[str, Any]) -> Tuple["TrainConfig", Dict[str, Any]]:
        """This config for resuming a run whose stored config is ``stored``: a key the run's file lacks was added
        after the run started, and takes the value the run was trained with (it goes on as it started).
        Returns the config (a copy when a key was taken) and the keys so taken, with their values."""
        taken = keys_added_since(stored)
        if not taken:
            return self, {}
        return TrainConfig.from_dict(with_keys(self.to_dict(), taken)), taken

    @classmethod
    def of_file(cls, d: Dict[str, Any], source: str = "config") -> "TrainConfig":
        """The config a run's file (its config.yaml, a checkpoint, a generator) was written with. Those hold
        every key; one missing was added later, and takes the value that rebuilds what the file holds."""
        return cls.from_dict(with_keys(d or {}, keys_added_since(d or {})), source)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "TrainConfig":
        return cls.from_dict(apply_overrides(read_yaml_mapping(path), overrides), str(path))

    def check(self, source: str = "config") -> None:
        for key, allowed in choices().items():
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value not in allowed:
                raise SpeakEmbError(f"{source}: {key} must be one of {', '.join(allowed)}; got '{value}'")
        check_device_name(self.train.device, f"{source}: train.device")
        positive = [("diffusion.timesteps", self.diffusion.timesteps), ("train.steps", self.train.steps),
                    ("train.batch_size", self.train.batch_size), ("train.lr", self.train.lr),
                    ("model.hidden", self.model.hidden), ("model.subspace_dims", self.model.subspace_dims),
                    ("model.subspace_rows_per_dim", self.model.subspace_rows_per_dim),
                    ("train.log_every", self.train.log_every),
                    ("train.validate_every", self.train.validate_every),
                    ("train.checkpoint_every", self.train.checkpoint_every), ("sample.steps", self.sample.steps),
                    ("normalization.n_quantiles", self.normalization.n_quantiles),
                    ("sample.rest_temperature", self.sample.rest_temperature)]
        for key, value in positive:
            if not value > 0:
                raise SpeakEmbError(f"{source}: {key} must be positive; got {value}")
        at_least = [("sample.batch_size", self.sample.batch_size, 1), ("train.keep_checkpoints", self.train.keep_checkpoints, 1),
                    ("train.warmup_steps", self.train.warmup_steps, 0), ("sample.eta", self.sample.eta, 0),
                    ("model.blocks", self.model.blocks, 1), ("model.expansion", self.model.expansion, 1),
                    ("model.time_dim", self.model.time_dim, 2), ("data.min_utterances", self.data.min_utterances, 1),
                    ("train.weight_decay", self.train.weight_decay, 0), ("train.patience", self.train.patience, 0),
                    ("train.grad_clip", self.train.grad_clip, 0),
                    ("model.hidden_per_64_dims", self.model.hidden_per_64_dims, 0)]
        if self.train.threads is not None:
            at_least.append(("train.threads", self.train.threads, 1))
        for key, value, low in at_least:
            if value < low:
                raise SpeakEmbError(f"{source}: {key} must be at least {low}; got {value}")
        if not 0 <= self.seed < 2**63:
            raise SpeakEmbError(f"{source}: seed must be in 0..2^63-1; got {self.seed}")
        if not 0 <= self.model.dropout < 1:
            raise SpeakEmbError(f"{source}: model.dropout must be in [0, 1); got {self.model.dropout}")
        if not 0 <= self.train.validation_share < 1:
            raise SpeakEmbError(f"{source}: train.validation_share must be in [0, 1); got {self.train.validation_share}")
        if not self.normalization.min_std > 0:
            raise SpeakEmbError(f"{source}: normalization.min_std must be positive; got {self.normalization.min_std}")
        if self.normalization.radial and self.normalization.polar == "always":
            raise SpeakEmbError(f"{source}: normalization.radial and normalization.polar=always exclude each other")
        if not 0 < self.normalization.point_mass_share <= 1:
            raise SpeakEmbError(f"{source}: normalization.point_mass_share must be in (0, 1]")
        if not self.normalization.polar_max_spread >= 0:
            raise SpeakEmbError(f"{source}: normalization.polar_max_spread must be at least 0")
        if not 0 <= self.train.ema_decay < 1:
            raise SpeakEmbError(f"{source}: train.ema_decay must be in [0, 1); got {self.train.ema_decay}")
        if not 0 < self.diffusion.beta_start < self.diffusion.beta_end < 1:
            raise SpeakEmbError(f"{source}: need 0 < diffusion.beta_start < diffusion.beta_end < 1")
        self._check_conditions(source)
        if self.sample.steps > self.diffusion.timesteps:
            raise SpeakEmbError(f"{source}: sample.steps ({self.sample.steps}) exceeds diffusion.timesteps "
                                f"({self.diffusion.timesteps})")


    def _check_conditions(self, source: str) -> None:
        from toucan_speakemb.training.conditions import check_condition_names

        check_condition_names(self.model.conditions, source)
        if self.model.conditions and self.model.kind != "resmlp":
            raise SpeakEmbError(f"{source}: model.conditions needs model.kind resmlp; got '{self.model.kind}'")
        edges = self.model.age_bands
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] <= 0:
            raise SpeakEmbError(f"{source}: model.age_bands must be increasing positive ages; got {edges}")
        if not 0 <= self.train.overfit_tolerance <= 1:
            raise SpeakEmbError(f"{source}: train.overfit_tolerance must be in [0, 1]; got {self.train.overfit_tolerance}")
        if not 0 < self.train.p_uncond < 1:
            raise SpeakEmbError(f"{source}: train.p_uncond must be in (0, 1); got {self.train.p_uncond}")
        if not 0 <= self.sample.variance_correction <= 1:
            raise SpeakEmbError(f"{source}: sample.variance_correction must be in [0, 1]; got "
                                f"{self.sample.variance_correction}")
        if not self.sample.autoguidance >= 0:
            raise SpeakEmbError(f"{source}: sample.autoguidance must be at least 0; got {self.sample.autoguidance}")
        if not self.sample.guidance >= 0:
            raise SpeakEmbError(f"{source}: sample.guidance must be at least 0; got {self.sample.guidance}")
        if self.sample.slider_inversion_steps < 1:  # more than diffusion.timesteps means all of them
            raise SpeakEmbError(f"{source}: sample.slider_inversion_steps must be at least 1; "
                                f"got {self.sample.slider_inversion_steps}")
        if not 0 < self.sample.slider_strength <= 1:
            raise SpeakEmbError(f"{source}: sample.slider_strength must be in (0, 1]; got "
                                f"{self.sample.slider_strength}")


# keys added to the config after files were written without them: the value that rebuilds those files' models
ADDED_KEYS = {"model.hidden_per_64_dims": 0,  # the width was model.hidden whatever the subspace
              "sample.rest_temperature": 1.0,  # one temperature for every direction
              "sample.variance_correction": 0.0}  # the network's directions sampled as it samples them


def with_keys(d: Dict[str, Any], values: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of the config mapping ``d`` with ``values`` ({"section.key": value}) set; ``d`` is left as it is."""
    out = {section: dict(v) if isinstance(v, dict) else v for section, v in d.items()}
    for name, value in values.items():
        section, key = name.split(".")
        out[section][key] = value
    return out


def keys_added_since(stored: Dict[str, Any]) -> Dict[str, Any]:
    """The ``ADDED_KEYS`` a stored config (every key of its time) lacks, with the values that rebuild it."""
    missing = {}
    for name, value in ADDED_KEYS.items():
        section, key = name.split(".")
        if isinstance(stored.get(section), dict) and key not in stored[section]:
            missing[name] = value
    return missing


def choices() -> Dict[str, Sequence[str]]:
    """The keys that take one of a few names, and those names."""
    from toucan_speakemb.diffusion.denoisers import DENOISERS
    from toucan_speakemb.diffusion.gaussian import LOSSES, PREDICTIONS, VARIANCES
    from toucan_speakemb.diffusion.samplers import sampler_names
    from toucan_speakemb.diffusion.schedules import SCHEDULES

    return {
        "data.level": DATA_LEVELS,
        "diffusion.schedule": SCHEDULES,
        "diffusion.prediction": PREDICTIONS,
        "diffusion.loss": LOSSES,
        "diffusion.variance": VARIANCES,
        "model.kind": tuple(DENOISERS),
        "model.subspace": ("scaled", "full", "auto", "fixed"),
        "model.subspace_rest": ("full", "isotropic"),
        "train.lr_schedule": ("cosine", "constant"),
        "train.select": ("best", "last"),
        "normalization.transform": ("standard", "quantile", "auto"),
        "sample.sampler": sampler_names(),
        "normalization.polar": ("auto", "always", "never"),
        "normalization.clip": ("auto", "always", "never"),
        "sample.slider_method": SLIDER_METHODS,
    }


def _build(cls, d: Dict[str, Any], source: str, prefix: str):
    if not isinstance(d, dict):
        raise SpeakEmbError(f"{source}: '{prefix.rstrip('.') or 'config'}' must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise SpeakEmbError(f"{source}: unknown config key '{prefix}{unknown[0]}' (known in this section: "
                            f"{', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    defaults = cls()
    for name, value in d.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}", source)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against the field's annotation (int, float, str, bool, Optional of one, or a List of one;
    a list may be given as one comma-separated string, as command-line overrides do)."""
    if typing.get_origin(hint) in (list, List):
        item = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise SpeakEmbError(f"{source}: {key} must be a list of {_TYPE_NAMES.get(item, item.__name__)}s; "
                                f"got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise SpeakEmbError(f"{source}: {key} must be {_a(base)}; got null")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
        allowed = choices().get(key)
        if allowed is not None:  # e.g. YAML reads clip: yes as a boolean
            raise SpeakEmbError(f"{source}: {key} must be one of {', '.join(allowed)}; got {value!r}")
    raise SpeakEmbError(f"{source}: {key} must be {_a(base)}; got {value!r}")


_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean (true / false)"}


def _a(base) -> str:
    name = _TYPE_NAMES.get(base, base.__name__)
    return ("an " if name[0] in "aeiou" else "a ") + name


def read_yaml_mapping(path: str | Path, what: str = "config") -> Dict[str, Any]:
    """A YAML file that must hold a mapping; every problem is one SpeakEmbError line."""
    path = Path(path)
    if not path.exists():
        raise SpeakEmbError(f"{what} file not found: {path}")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SpeakEmbError(f"{what} {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise SpeakEmbError(f"{what} {path} is not a UTF-8 text file") from None
    if not isinstance(d, dict):
        raise SpeakEmbError(f"{what} {path} must be a mapping of keys to values")
    return d


def apply_overrides(d: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict, returning a copy."""
    import copy

    out = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise SpeakEmbError(f"bad override '{item}': expected section.key=value, e.g. train.steps=2000")
        key, raw = item.split("=", 1)
        parts: List[str] = [p for p in key.strip().split(".") if p]
        if not parts:
            raise SpeakEmbError(f"bad override '{item}': empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpeakEmbError(f"bad override '{item}': '{p}' is not a section")
        node[parts[-1]] = value
    return out
