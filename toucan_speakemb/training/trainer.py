"""Training a generator: data at the chosen level, the DDPM loop, checkpoints that resume exactly.

A run folder holds, as the run goes::

    config.yaml               the resolved config the run uses (every hyperparameter)
    train.log                 what happened, with times
    checkpoints/step_NNNNNNN.safetensors   weights, EMA, optimiser, RNG states, loss history
    loss.csv, loss.png        the training loss (written at every checkpoint and at the end)
    train_speakers.safetensors  the training speakers (means), for novelty checks
    generator.safetensors     the finished generator: EMA weights, standardisation, config, profile
    summary.json              data, timing and the final loss

Resuming after a kill restarts from the newest checkpoint and gives the same weights as a run that was never
interrupted (all randomness comes from generators whose states are checkpointed).

Devices (``train.device``, default auto: ``cuda:LOCAL_RANK`` when CUDA is there, else ``cpu``): the model, the
EMA, the batches and the noise live there; the noise and the batch indices are drawn on the CPU from the
checkpointed generator and moved, and the Gaussian fit is computed on the CPU, so a run on a GPU differs from
one on the CPU by float rounding only. Checkpoints and the generator hold CPU tensors: they load anywhere.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from toucan_speakemb.core.threads import cpu_threads
from toucan_speakemb.core.version import __version__
from toucan_speakemb.evaluation.matched import MEDIAN_TOLERANCE, knob_at_median
from toucan_speakemb.evaluation.metrics import cosine_similarity_matrix_max, knn_measures, same_speaker_threshold
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.diffusion.denoisers import GaussianResidual, build_denoiser, gaussian_part
from toucan_speakemb.diffusion.gaussian import GaussianDiffusion, eigen_subspace, tempered, variance_scales
from toucan_speakemb.diffusion.schedules import make_betas
from toucan_speakemb.training.conditions import ConditionSpec, draw_null_mask
from toucan_speakemb.core.distributed import resolve_device
from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_json, atomic_write_text, load_tensors, save_tensors
from toucan_speakemb.diffusion.standardize import Standardizer

log = logging.getLogger("toucan_speakemb.train")

CHECKPOINT_KIND = "checkpoint"
GENERATOR_KIND = "generator"
FORMAT_VERSION = 1


def same_speaker_record(es) -> Dict:
    """The same-speaker threshold of a training set, as stored with a generator.

    Computed at the utterance level over every speaker with two or more embeddings. When every speaker has
    one embedding there are no same-speaker pairs: the record says so (``value`` None, ``reason``) and
    novelty checks then need an explicit threshold.
    """
    counts = es.counts_per_speaker()
    with_pairs = sum(1 for c in counts.values() if c >= 2)
    if with_pairs == 0:
        return {"value": None, "reason": "every training speaker has a single embedding, so there are no "
                                         "same-speaker pairs to set a threshold from"}
    try:
        thr, eer = same_speaker_threshold(es.embeddings, np.asarray(es.speaker_ids))
    except ValueError as e:
        return {"value": None, "reason": str(e)}
    return {"value": float(thr), "eer": float(eer), "level": "utterance", "utterances": len(es),
            "speakers_with_pairs": int(with_pairs),
            "method": "equal-error point of same- and different-speaker cosine over the training utterances"}


# the quantile of real new speakers' nearest-training cosine a new voice must stay under by default: a voice is
# accepted when it is no closer to a training speaker than 9 in 10 real new speakers are
UNSEEN_QUANTILE = 0.9


def unseen_speaker_record(means: np.ndarray) -> Dict:
    """How close real new speakers come to the training speakers, as stored with a generator.

    Each training speaker, left out in turn, is a real speaker drawn from the population apart from the others;
    its cosine to the nearest *other* training speaker (speaker means) is what a real new speaker scores
    against a population of this size. The validation speakers alone are draws of the same quantity, a tenth as
    many: on the demo's data (6 training sets x 4 validation splits) their 0.9 quantile let 79-96% of fresh
    speakers through (standard deviation 0.044), every speaker's 89-93% (0.017; docs/benchmarks.md). ``value``
    is the ``UNSEEN_QUANTILE`` quantile of these cosines: novelty checks accept a voice whose nearest training
    speaker (and nearest other voice) is no closer than that. The sorted cosines are kept so that another
    quantile can be asked for later.
    """
    x = np.asarray(means, np.float64)
    if len(x) < 2:
        return {"value": None, "reason": "fewer than 2 training speakers"}
    nearest = np.sort(cosine_similarity_matrix_max(x, x, exclude_self=True)[0])
    return {"value": float(np.quantile(nearest, UNSEEN_QUANTILE)), "quantile": UNSEEN_QUANTILE,
            "median": float(np.median(nearest)), "speakers": int(len(x)),
            "nearest_cosines": [round(float(c), 6) for c in nearest],
            "method": "cosine of each training speaker's mean to its nearest other training speaker's mean "
                      "(each left out in turn); value: their quantile"}


TEMPERATURE_RANGE = (0.5, 1.5)  # the default temperature is chosen in this range
TEMPERATURE_VOICES = 512        # voices sampled per tried temperature (at least)
# voice sets of the validation speakers' size each judgement averages over: with 4, the harmonic mean of 200
# validation speakers varied by 0.013 from noise to noise on (b), more than it changes across the novelty band
JUDGING_DRAWS = 16
JUDGING_MAX_VOICES = 8192       # fewer draws past this many voices: more validation speakers judge finer per set
BAND_WIDTH = MEDIAN_TOLERANCE / 2  # how much more novel than real new speakers a chosen temperature's voices may be
BALANCE_MIN_SPEAKERS = 50       # fewer validation speakers: their k-NN balls are too coarse to weigh P against R


@contextmanager
def voices_as_sampled(diffusion: GaussianDiffusion, model: torch.nn.Module, data: "TrainingData",
                      cfg: TrainConfig, n: int = TEMPERATURE_VOICES, rest: float = 1.0,
                      directions: Optional[Sequence[float]] = None, model_space: bool = False):
    """``voices(t)``: ``n`` voices in the data space (``model_space``: in the model's) at temperature ``t``,
    sampled as the generator samples by default (DDIM with its steps and autoguidance; ``rest``: the
    temperature ratio outside the network's subspace, :func:`rest_temperature`; ``directions``: the factors
    inside it, :func:`direction_scales`) from the same fixed noise every call, so that two temperatures or two
    sets of weights differ only by that. The model is back as it was after."""
    noise = torch.randn(n, data.standardizer.model_dim,
                        generator=torch.Generator().manual_seed(cfg.seed ^ 0x7E3))
    gaussian = gaussian_part(model)
    was_training, scale = model.training, None if gaussian is None else gaussian.correction_scale

    def voices(t: float) -> Union[np.ndarray, torch.Tensor]:
        x_T = tempered(noise.to(model_device(model)), t, gaussian, rest, directions)
        z = diffusion.ddim_sample_loop(model, x_T, steps=cfg.sample.steps, gaussian=gaussian).cpu()
        return z if model_space else data.standardizer.inverse(z.numpy())

    try:
        if gaussian is not None:
            gaussian.correction_scale = float(cfg.sample.autoguidance)
        model.eval()
        with torch.no_grad():
            yield voices
    finally:
        model.train(was_training)
        if gaussian is not None:
            gaussian.correction_scale = scale


def judging_voices(n_validation: int) -> int:
    """How many voices a judgement against ``n_validation`` speakers samples: ``JUDGING_DRAWS`` sets of their
    size (k-NN precision and recall are biased when the two sets differ in size), fewer sets when that passes
    ``JUDGING_MAX_VOICES``, at least one and at least ``TEMPERATURE_VOICES`` voices."""
    n = max(int(n_validation), 1)
    return max(TEMPERATURE_VOICES, max(1, min(JUDGING_DRAWS, JUDGING_MAX_VOICES // n)) * n)


def knn_against(real: np.ndarray, voices: np.ndarray, k: int = 5) -> Dict[str, float]:
    """k-NN precision and recall (Kynkäänniemi et al. 2019) of ``voices`` against ``real`` speakers, averaged
    over consecutive sets of ``len(real)`` voices (the sets are of equal size, as in the benchmark), and
    their harmonic mean."""
    n = len(real)
    sets = [voices[i:i + n] for i in range(0, len(voices) - n + 1, n)] or [voices]
    scores = [knn_measures(real, x, k=k) for x in sets]
    p = float(np.mean([s["precision"] for s in scores]))
    r = float(np.mean([s["recall"] for s in scores]))
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def _novelty_temperature(median: Callable[[float], float], target: float, method: str) -> Dict:
    """The temperature at which the voices' median nearest-training cosine, ``median(t)``, is ``target``
    (bisection)."""
    value, m, reached = knob_at_median(median, *TEMPERATURE_RANGE, target)
    if not reached and abs(m - target) > MEDIAN_TOLERANCE:
        return _unreachable(value, m, target, method)
    return {"value": round(float(value), 4), "chosen": True, "rule": "novelty", "reached": reached,
            "target_median": target, "median": m, "method": method}


def _unreachable(end: float, median: float, target: float, method: str) -> Dict:
    """No temperature in the range makes the voices as novel as real new speakers, nor nearly (the
    yardstick's tolerance): an end of the range would only shrink (or spread) the voices without reaching
    it, so plain sampling is kept."""
    return {"value": 1.0, "chosen": False, "rule": "novelty", "reached": False, "target_median": target,
            "nearest_end": round(float(end), 4), "median_at_nearest_end": median, "method": method,
            "reason": f"no temperature in {TEMPERATURE_RANGE[0]:g}..{TEMPERATURE_RANGE[1]:g} reaches the "
                      f"real new speakers' median {target:.4f} (at {end:g}: {median:.4f}); 1.0 kept"}


def _novelty_band(median: Callable[[float], float], target: float) -> Optional[Tuple[float, float]]:
    """The temperatures [a, b] whose voices are at least as novel as real new speakers and at most
    ``BAND_WIDTH`` more: median nearest-training cosine ``median(t)`` in [target - BAND_WIDTH, target] (it
    falls as the temperature rises, as spreading the voices makes them more novel); each edge by bisection,
    to within a tenth of the yardstick's tolerance (0.0005). None when the range's ends show that no
    temperature is in it (medians that do not fall may hide a band between them).

    The band is half the yardstick's ±0.005 and on its novel side: the target and the voices' median are each
    estimates, off by about 0.003 from what a report over other voices and more real speakers reads. Voices
    chosen at either edge of the yardstick itself read as not as novel in about half the reports: at the less
    novel edge, where the balance peaks on the demo's data, in two demo reports of three; at the more novel
    edge, where it peaks on (b), in (b)'s benchmark (docs/benchmarks.md)."""
    lo, hi = TEMPERATURE_RANGE
    if median(hi) > target or median(lo) < target - BAND_WIDTH:  # never novel enough, or always too novel
        return None
    a = knob_at_median(median, lo, hi, target)[0] if median(lo) > target else lo
    b = knob_at_median(median, lo, hi, target - BAND_WIDTH)[0] if median(hi) < target - BAND_WIDTH else hi
    return float(a), float(b)  # a <= b: the two bisections halve the same points until they part


def _balance_search(score: Callable[[float], Dict], a: float, b: float) -> Tuple[float, Dict[float, Dict]]:
    """The temperature in [a, b] whose voices score the highest ``score(t)["f1"]``: scored at both ends and
    the middle, refined by the vertex of the parabola through the three when it opens downwards (kept in
    [a, b]), and kept only when it scores at least the best of them. Returns (the value, rounded to 4
    decimals; the scores by temperature)."""
    ts = sorted({round(float(t), 4) for t in (a, 0.5 * (a + b), b)})
    scored = {t: score(t) for t in ts}
    best = max(ts, key=lambda t: scored[t]["f1"])
    value = best
    if len(ts) == 3:
        qa, qb, _ = np.polyfit(ts, [scored[t]["f1"] for t in ts], 2)
        if qa < 0:
            value = round(float(np.clip(-qb / (2 * qa), a, b)), 4)
    if value not in scored:
        scored[value] = score(value)
        if scored[value]["f1"] < scored[best]["f1"]:  # the scores are not a parabola here: the best scored point
            value = best
    return float(value), dict(sorted(scored.items()))


def novelty_target(real: np.ndarray, seen: np.ndarray) -> float:
    """How novel a real new speaker is: the median cosine of a real speaker to its nearest training-loop speaker.

    Each validation speaker (``real``) gives one draw: its nearest among the ``n`` speakers the loop trained on
    (``seen``). Each training-loop speaker, left out in turn, gives another draw of the same quantity: its
    nearest among the ``n - 1`` others. The median is taken over both, every speaker of the set instead of the
    validation share alone. On the demo's data, over 8 validation splits, the 60 validation speakers' median
    was 0.012 from fresh speakers' on average (at most 0.025), the pooled one 0.0016 (at most 0.003); for one
    run, the temperature chosen on the pooled target differed from the former's by up to 0.13
    (docs/benchmarks.md)."""
    to_seen = cosine_similarity_matrix_max(real, seen)[0]
    left_out = cosine_similarity_matrix_max(seen, seen, exclude_self=True)[0] if len(seen) >= 2 else []
    return float(np.median(np.concatenate([to_seen, left_out])))


SCALE_VOICES = 4096  # voices whose principal coordinates' variances set the direction factors


def direction_scales(diffusion: GaussianDiffusion, model: torch.nn.Module, data: "TrainingData", cfg: TrainConfig,
                     step: int) -> Optional[List[float]]:
    """The factors of the initial noise along the k principal directions the network models, for the weights of
    ``step`` (``sample.variance_correction``, :func:`~toucan_speakemb.diffusion.gaussian.variance_scales`): from
    the variances of ``SCALE_VOICES`` voices sampled at temperature 1, against the training rows' (the Gaussian
    fit's eigenvalues). None for step 0 (the Gaussian fit, whose variances are the training rows'), for a network
    without a principal subspace in the Gaussian's eigenbasis, for a strength of 0, and for data on which no
    temperature is chosen (:func:`no_temperature_reason`)."""
    gaussian = gaussian_part(model)
    k = eigen_subspace(gaussian)
    strength = float(cfg.sample.variance_correction)
    if step == 0 or not k or strength == 0 or no_temperature_reason(data, cfg):
        return None  # (nor where no temperature will be chosen: the factors are stored only with one)
    with voices_as_sampled(diffusion, model, data, cfg, n=SCALE_VOICES, model_space=True) as voices:
        z = voices(1.0).double()
    c = (z - gaussian.mean.cpu().double()) @ gaussian.eigvecs[:, :k].cpu().double()
    scales = variance_scales(c.var(0).numpy(), gaussian.eigvals[:k].cpu().double().numpy(), strength)
    return [round(float(x), 6) for x in scales]


def rest_temperature(cfg: TrainConfig, step: int) -> float:
    """The temperature ratio of the directions outside the network's subspace for the weights of ``step``:
    ``sample.rest_temperature``, or 1 for step 0, the Gaussian fit itself, where no direction is modelled apart."""
    return 1.0 if step == 0 else float(cfg.sample.rest_temperature)


def temperature_for_weights(diffusion: GaussianDiffusion, model: torch.nn.Module, data: "TrainingData",
                            means: np.ndarray, cfg: TrainConfig, step: int) -> Dict:
    """:func:`choose_temperature` for the weights of ``step`` that ``model`` holds, with their rest ratio
    (:func:`rest_temperature`) and direction factors (:func:`direction_scales`)."""
    return choose_temperature(diffusion, model, data, means, cfg, rest_temperature(cfg, step),
                              direction_scales(diffusion, model, data, cfg, step))


def choose_temperature(diffusion: GaussianDiffusion, model: torch.nn.Module, data: "TrainingData",
                       means: np.ndarray, cfg: TrainConfig, rest: float = 1.0,
                       directions: Optional[Sequence[float]] = None) -> Dict:
    """:func:`choose_temperature_value` with the voices tempered by ``rest`` outside the network's subspace
    (:func:`rest_temperature`) and by ``directions`` inside it (:func:`direction_scales`); the record says what
    the generator samples with (``rest_temperature``, ``direction_scales``): these when a temperature was chosen
    with them, else 1 and None (no temperature chosen: plain sampling; or a network without a principal
    subspace in the Gaussian's eigenbasis, where no direction is tempered apart)."""
    if eigen_subspace(gaussian_part(model)) is None:
        rest, directions = 1.0, None
    rec = choose_temperature_value(diffusion, model, data, means, cfg, rest, directions)
    chosen = rec["chosen"]
    return {**rec, "rest_temperature": float(rest) if chosen else 1.0,
            "direction_scales": [float(x) for x in directions] if chosen and directions is not None else None}


def choose_temperature_value(diffusion: GaussianDiffusion, model: torch.nn.Module, data: "TrainingData",
                             means: np.ndarray, cfg: TrainConfig, rest: float = 1.0,
                             directions: Optional[Sequence[float]] = None) -> Dict:
    """The default sampling temperature (scale of the initial noise), chosen on training speakers alone.

    How novel a real new speaker is: :func:`novelty_target`, the median cosine of a real speaker to its nearest
    training-loop speaker, over the validation speakers and every training-loop speaker left out in turn
    ("theirs" below). The validation speakers, real speakers the model never learned from, are the sample of
    the population the model's voices should cover.

    - With at least ``BALANCE_MIN_SPEAKERS`` of them (rule ``"balance"``): the temperature whose voices score
      the highest harmonic mean of k-NN precision and recall against them (:func:`knn_against`), among the
      temperatures whose voices are at least as novel as real new speakers and at most ``BAND_WIDTH`` more
      (half the yardstick of ``evaluation.matched``; :func:`_novelty_band`, :func:`_balance_search`). The
      median alone is a weak guide on a dense population: over 200 speakers its sampling noise is worth 0.03
      of temperature, so the band leaves the balance to precision and recall (docs/benchmarks.md). More novel
      voices are not taken: on the synthetic set (b) they bought recall at a precision that a finer judge
      (5000 fresh speakers) measured at 0.63 against 0.81.
    - With fewer (rule ``"novelty"``), or when no temperature of ``TEMPERATURE_RANGE`` is in that band: the
      temperature at which the voices' median equals theirs (bisection); 1.0 when no temperature in the
      range reaches it nor nearly.
    - Without validation speakers at the speaker level: 1.0 (plain sampling).

    The voices are sampled as the generator samples by default, from fixed noise (:func:`voices_as_sampled`).
    """
    reason = no_temperature_reason(data, cfg)
    if reason:
        return {"value": 1.0, "chosen": False, "reason": reason}
    held = np.asarray(data.validation, bool)
    real, seen = np.asarray(means[held], np.float64), np.asarray(means[~held], np.float64)
    target = novelty_target(real, seen)
    novelty_method = ("the temperature at which the median cosine of sampled voices to their nearest "
                      "training-loop speaker equals real new speakers' (the validation speakers' and each "
                      "training-loop speaker's, left out in turn; bisection)")
    balance = len(real) >= BALANCE_MIN_SPEAKERS
    n = judging_voices(len(real)) if balance else TEMPERATURE_VOICES
    with voices_as_sampled(diffusion, model, data, cfg, n=n, rest=rest, directions=directions) as voices:
        medians: Dict[float, float] = {}  # by temperature rounded to 4 decimals, as stored

        def median_of(t: float, x: np.ndarray) -> float:
            if t not in medians:
                medians[t] = float(np.median(cosine_similarity_matrix_max(x, seen)[0]))
            return medians[t]

        def median(t: float) -> float:  # the searches keep each temperature's median, not its voices
            t = round(float(t), 4)
            return medians[t] if t in medians else median_of(t, voices(t))

        def score(t: float) -> Dict:  # the few scored temperatures are sampled again (no voices are kept)
            x = voices(t)
            return {**knn_against(real, x), "median": median_of(t, x)}

        band = _novelty_band(median, target) if balance else None
        if band is None:
            return _novelty_temperature(median, target, novelty_method)
        value, scored = _balance_search(score, *band)
    curve = [{"temperature": t, **{k: round(v, 4) for k, v in c.items()}} for t, c in scored.items()]
    return {"value": value, "chosen": True, "rule": "balance", "target_median": target, **scored[value],
            "validation_speakers": int(len(real)), "band": [round(band[0], 4), round(band[1], 4)],
            "method": "the temperature whose voices score the highest harmonic mean of k-NN precision and recall "
                      "(k = 5) against the validation speakers, among those at least as novel as real new "
                      f"speakers and at most {BAND_WIDTH:g} more (median nearest-training cosine of the "
                      "validation speakers and of the training-loop speakers, each left out in turn)",
            "balance_curve": curve}


def no_temperature_reason(data: "TrainingData", cfg: TrainConfig) -> Optional[str]:
    """Why no default temperature can be chosen on this data (None: it can)."""
    if data.validation is None or not np.any(data.validation) or cfg.data.level != "speaker":
        return "no validation speakers at the speaker level to choose one on"
    return None


def temperature_reason(rec: Dict) -> str:
    """How a default temperature record was chosen, in one phrase for the log."""
    if rec.get("reason"):
        return rec["reason"]
    if rec.get("rule") == "balance":
        return (f"best balance of precision {rec['precision']:.3f} and recall {rec['recall']:.3f} against "
                f"{rec['validation_speakers']} validation speakers, voices' median nearest-training cosine "
                f"{rec['median']:.4f}, real new speakers' {rec['target_median']:.4f}")
    return f"voices as novel as real new speakers: median nearest-training cosine {rec['target_median']:.4f}"


def unjudged_reason(data: "TrainingData", cfg: TrainConfig, k: int = 5) -> Optional[str]:
    """Why voices cannot be judged against the validation speakers (None: they can)."""
    if cfg.data.level != "speaker":
        return f"the model is trained on {cfg.data.level} rows, not on speaker means"
    if data.validation is None or int(np.sum(data.validation)) <= k:
        return f"fewer than {k + 1} validation speakers"
    return None


def voice_quality(diffusion: GaussianDiffusion, model: torch.nn.Module, data: "TrainingData", means: np.ndarray,
                  cfg: TrainConfig, temperature: float, k: int = 5, rest: float = 1.0,
                  directions: Optional[Sequence[float]] = None) -> Optional[Dict[str, float]]:
    """k-NN precision and recall of the model's voices at ``temperature`` against the validation speakers'
    means, and their harmonic mean (:func:`knn_against`); None when they cannot be judged so
    (:func:`unjudged_reason`)."""
    if unjudged_reason(data, cfg, k):
        return None
    held = np.asarray(data.validation, bool)
    with voices_as_sampled(diffusion, model, data, cfg, n=judging_voices(int(held.sum())), rest=rest,
                           directions=directions) as voices:
        x = voices(temperature)
    return knn_against(np.asarray(means[held], np.float64), x, k=k)


def build_diffusion(cfg: TrainConfig) -> GaussianDiffusion:
    dc = cfg.diffusion
    betas = make_betas(dc.schedule, dc.timesteps, dc.beta_start, dc.beta_end)
    return GaussianDiffusion(betas, dc.prediction, dc.loss, dc.variance)


def build_model(cfg: TrainConfig, dim: int, spec: Optional[ConditionSpec] = None,
                subspace: Optional[int] = None) -> torch.nn.Module:
    """The denoiser; ``spec``: the trained conditions (None: unconditional); ``subspace``: the number of
    principal directions its network sees (None: all)."""
    subspace = subspace if cfg.model.gaussian_residual and subspace is not None and subspace < dim else None
    options = cfg.model.options(subspace)
    if spec:
        options["conditions"] = spec.cardinalities
    net = build_denoiser(cfg.model.kind, subspace or dim, cfg.diffusion.timesteps, options)
    if cfg.model.gaussian_residual:
        shifts = spec.cardinalities if spec and cfg.model.condition_gaussian else None
        net = GaussianResidual(net, dim, build_diffusion(cfg).alphas_cumprod, cfg.diffusion.prediction,
                               subspace=subspace, conditions=shifts, rest=cfg.model.subspace_rest)
    return net


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights are on."""
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def subspace_dims(cfg: TrainConfig, data: "TrainingData") -> Optional[int]:
    """How many principal directions the network models (None: all); from the training rows only."""
    mc = cfg.model
    if not mc.gaussian_residual or mc.subspace == "full":
        return None
    d = data.rows.shape[1]
    if mc.subspace == "fixed":
        return min(mc.subspace_dims, d)
    if mc.subspace == "scaled":
        # one direction per subspace_rows_per_dim rows the network learns from (validation speakers' excluded),
        # at least subspace_dims: a network on a handful of directions fits the few speakers it sees (docs/benchmarks.md)
        k = max(mc.subspace_dims, round(data.n_train_rows / mc.subspace_rows_per_dim))
        return None if k >= d else k
    from toucan_speakemb.diffusion.subspace import choose_subspace_dims

    return choose_subspace_dims(data.rows, seed=cfg.seed)


# ---- data ---------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """Rows the loop draws from, in standardised units, and how a batch is drawn.

    ``validation``: speakers (boolean per speaker) whose rows the loop never draws; they score the
    checkpoints (see :func:`validation_loss`). The transforms and the Gaussian part are statistics of all
    rows: they are fixed before training, so the choice between checkpoints cannot favour them.
    """

    rows: np.ndarray               # (n, d) standardised
    row_speaker: np.ndarray        # (n,) speaker index of each row
    level: str
    n_speakers: int
    standardizer: Standardizer
    spec: Optional[ConditionSpec] = None  # conditional models: the trained attributes and values
    codes: Optional[np.ndarray] = None    # (n, k) condition codes of the rows (0 = null / unknown)
    validation: Optional[np.ndarray] = None  # (n_speakers,) bool; None: no validation speakers

    def draw(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.from_numpy(self.rows[self.draw_index(batch, gen)])

    def draw_index(self, batch: int, gen: torch.Generator) -> np.ndarray:
        if self.level == "balanced":
            spk = self._train_speakers[torch.randint(len(self._train_speakers), (batch,), generator=gen).numpy()]
            u = torch.rand(batch, generator=gen, dtype=torch.float64).numpy()
            idx = self._starts[spk] + np.minimum((u * self._counts[spk]).astype(np.int64), self._counts[spk] - 1)
            idx = self._order[idx]
        else:
            idx = self._train_rows[torch.randint(len(self._train_rows), (batch,), generator=gen).numpy()]
        return idx

    @property
    def n_train_rows(self) -> int:
        """How many rows the loop draws from (the validation speakers' rows excluded)."""
        return len(self._train_rows)

    @property
    def validation_rows(self) -> np.ndarray:
        return self.rows[~self._is_train_row]

    @property
    def validation_codes(self) -> Optional[np.ndarray]:
        """Condition codes of the validation rows (None for an unconditional model)."""
        return None if self.codes is None else self.codes[~self._is_train_row]

    def __post_init__(self):
        self._order = np.argsort(self.row_speaker, kind="stable")
        self._counts = np.bincount(self.row_speaker, minlength=self.n_speakers)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
        held = np.zeros(self.n_speakers, bool) if self.validation is None else np.asarray(self.validation, bool)
        self._train_speakers = np.flatnonzero(~held)
        self._is_train_row = ~held[self.row_speaker]
        self._train_rows = np.flatnonzero(self._is_train_row)


def pick_validation_speakers(n_speakers: int, share: float, seed: int) -> Optional[np.ndarray]:
    """A seeded random ``share`` of the speakers (at least 1, leaving at least 2 to train); None for share 0."""
    n_val = min(max(1, round(share * n_speakers)), n_speakers - 2) if share > 0 else 0
    if n_val < 1:
        return None
    held = np.zeros(n_speakers, bool)
    held[np.random.default_rng([seed, 0x7A1]).permutation(n_speakers)[:n_val]] = True
    return held


def prepare_data(es: EmbeddingSet, cfg: TrainConfig) -> Tuple[TrainingData, EmbeddingSet]:
    """Filter speakers, pick the level, fit the standardisation. Returns the data and the training speakers."""
    counts = es.counts_per_speaker()
    keep = [c >= cfg.data.min_utterances for c in (counts[s] for s in es.speaker_ids)]
    if not all(keep):
        dropped = sum(1 for s, c in counts.items() if c < cfg.data.min_utterances)
        log.info("leaving out %d speakers with fewer than %d utterances", dropped, cfg.data.min_utterances)
        es = es.subset(np.array(keep))
    if len(es.speakers) < 2:
        raise SpeakEmbError(f"training needs at least 2 speakers; the data has {len(es.speakers)} "
                            f"(a generator of new voices learns how speakers differ)")
    means = es.speaker_means()
    zero = np.flatnonzero(~np.any(means.embeddings != 0, axis=1))
    if len(zero):  # novelty is a cosine to the nearest training speaker: a mean of length 0 has no direction
        raise SpeakEmbError(f"{len(zero)} speaker(s) have an all-zero mean embedding (first: "
                            f"{means.speaker_ids[zero[0]]!r}); remove them: a voice's novelty is its cosine to "
                            f"the training speakers, which a zero vector does not have")
    level = cfg.data.level
    if level == "speaker":
        raw, row_spk, weights = means.embeddings, np.arange(len(means)), None
    else:
        raw, row_spk = es.embeddings, es.speaker_index()
        weights = 1.0 / np.bincount(row_spk)[row_spk] if level == "balanced" else None
    nc = cfg.normalization
    polar = use_polar(cfg, raw)
    if polar:
        log.info("polar transform: direction and length are modelled apart")
    kind = transform_kind(cfg, raw)
    clip = use_clip(cfg, raw, kind)
    if clip:
        log.info("generated values are clipped to each dimension's training range")
    st = Standardizer.fit(raw, weights, nc.min_std, nc.standardize, kind, nc.n_quantiles, nc.radial, polar, clip)
    validation = pick_validation_speakers(len(means), cfg.train.validation_share, cfg.seed)
    data = TrainingData(st.forward(raw), row_spk, level, len(means), st, validation=validation)
    if cfg.model.conditions:
        rows_set = means if level == "speaker" else es
        data.spec = ConditionSpec.fit(rows_set, cfg.model.conditions, cfg.model.age_bands)
        data.codes = data.spec.encode_rows(rows_set)
        log.info("conditions: %s", "; ".join(f"{a}: " + ", ".join(f"{v} ({c})" for v, c in zip(
            data.spec.values[a], data.spec.counts[a])) for a in data.spec.attributes))
    return data, means


def has_point_mass(rows: np.ndarray, share: float) -> bool:
    """Whether some dimension of ``rows`` has one value in at least ``share`` of them (e.g. ReLU zeros)."""
    x = np.sort(np.asarray(rows), axis=0)
    need = max(2, int(np.ceil(share * len(x))))
    if len(x) < need:
        return False
    # a value held by `need` rows spans `need` consecutive sorted entries of its dimension
    return bool(np.any(x[need - 1:] == x[: len(x) - need + 1]))


def use_clip(cfg: TrainConfig, rows: np.ndarray, kind: str) -> bool:
    """Whether generated values are clipped to the training range: as configured, or ("auto") with the
    standard transform when some dimension of the training rows has a point mass (the quantile transform
    keeps every value in that range by itself). ``kind``: the transform :func:`transform_kind` chose."""
    nc = cfg.normalization
    if nc.clip != "auto":
        return nc.clip == "always"
    if kind != "standard" or nc.transform == "auto":  # auto chose standard: it found no point mass
        return False
    return has_point_mass(rows, nc.point_mass_share)


def transform_kind(cfg: TrainConfig, rows: np.ndarray) -> str:
    """The per-dimension transform: as configured, or ("auto") quantile when some dimension of the training
    rows has a point mass (one value in at least ``normalization.point_mass_share`` of the rows), else standard."""
    nc = cfg.normalization
    if nc.transform != "auto":
        return nc.transform
    has_mass = has_point_mass(rows, nc.point_mass_share)
    log.info("per-dimension transform: %s (%s)", "quantile" if has_mass else "standard",
             "a dimension has a point mass" if has_mass else "no dimension has a point mass")
    return "quantile" if has_mass else "standard"


def use_polar(cfg: TrainConfig, rows: np.ndarray) -> bool:
    """Whether the polar transform is on: as configured, or ("auto") when the training rows' lengths vary
    by at most ``normalization.polar_max_spread`` of their mean (never with ``radial``)."""
    nc = cfg.normalization
    if nc.polar == "never" or nc.radial or not nc.standardize:
        return False
    if nc.polar == "always":
        return True
    norms = np.linalg.norm(np.asarray(rows, np.float64), axis=1)
    return bool(norms.mean() > 0 and norms.std() <= nc.polar_max_spread * norms.mean())


# ---- checkpoints --------------------------------------------------------------------------------------
def _state_arrays(prefix: str, sd: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    return {f"{prefix}{k}": v.detach().cpu().numpy() for k, v in sd.items()}


def _optim_arrays(opt: torch.optim.Optimizer) -> Dict[str, np.ndarray]:
    out = {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"optim.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().numpy()
    return out


def _load_optim(opt: torch.optim.Optimizer, arrays: Dict[str, np.ndarray]) -> None:
    sd = opt.state_dict()
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, arr in arrays.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = torch.from_numpy(arr.copy())
    sd["state"] = state
    opt.load_state_dict(sd)


def _rng_array(state: torch.Tensor) -> np.ndarray:
    return state.numpy().copy()


def list_checkpoints(run_dir: Path) -> List[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*.safetensors"))


@dataclass
class TrainState:
    step: int
    history: List[List[float]]  # [step, loss, lr]
    elapsed: float
    running: float = 0.0  # loss sum and count since the last log line: checkpointed, so a resumed
    count: int = 0        # run logs exactly what an uninterrupted one does
    validation: List[List[float]] = field(default_factory=list)  # [step, validation loss]
    best_step: int = -1   # step of the best validation score so far (-1: none yet)
    since_best: int = 0   # validation scores since the best one
    stopped: bool = False  # stopped early (patience): the run is finished


VALIDATION_LEVELS = 20  # noise levels the validation loss averages over, evenly spaced over the schedule


def keep_better_voices(diffusion: GaussianDiffusion, ema: torch.nn.Module, best: Dict[str, torch.Tensor],
                       data: "TrainingData", means: np.ndarray, cfg: TrainConfig, state: TrainState):
    """A run the overfitting guard ended: its best-scoring weights and its final ones, judged by their voices.

    The validation loss picks the wrong weights for sampling (docs/benchmarks.md): later weights, worse by it,
    sample better at the novelty of real new speakers, and the best-scoring ones of a run that overfits a
    little can shrink to a few voices at the temperature that makes them that novel. So each set of weights
    samples at its own default temperature and its voices are scored against the validation speakers (k-NN
    precision and recall, their harmonic mean); the final weights are kept when they score higher. Leaves
    ``ema`` holding the kept weights; returns (their temperature record, the comparison for summary.json)."""
    final_state, final_step = _copy_state(ema), state.step
    judged = {}
    for name, step, weights in (("final", final_step, final_state), ("best", state.best_step, best)):
        ema.load_state_dict(weights)
        t = temperature_for_weights(diffusion, ema, data, means, cfg, step)
        # the balance rule has judged the voices at the temperature it chose, from the same noise: not again
        voices = ({key: t[key] for key in ("precision", "recall", "f1")} if t.get("rule") == "balance" else
                  voice_quality(diffusion, ema, data, means, cfg, t["value"], rest=t.get("rest_temperature", 1.0),
                                directions=t.get("direction_scales")))
        judged[name] = {"step": int(step), "temperature": t, "voices": voices}
    q_final, q_best = judged["final"]["voices"], judged["best"]["voices"]
    kept = "final" if q_final is not None and q_best is not None and q_final["f1"] > q_best["f1"] else "best"
    ema.load_state_dict(final_state if kept == "final" else best)
    for name in ("best", "final"):
        q = judged[name]["voices"]
        log.info("the network overfits: voices of the %s weights (step %d) at temperature %.3f: %s", name,
                 judged[name]["step"], judged[name]["temperature"]["value"],
                 f"not judged ({unjudged_reason(data, cfg)})" if q is None else
                 f"precision {q['precision']:.3f}, recall {q['recall']:.3f} (harmonic mean {q['f1']:.3f}) against "
                 f"the validation speakers")
    record = {"kept": kept, "tolerance": cfg.train.overfit_tolerance, "not_judged": unjudged_reason(data, cfg),
              "method": "each set of weights samples at its own default temperature; k-NN precision and recall "
                        "(k = 5) of its voices against the validation speakers; the final weights are kept when "
                        "the harmonic mean is higher",
              **{name: {"step": j["step"], "temperature": j["temperature"]["value"], "voices": j["voices"]}
                 for name, j in judged.items()}}
    return judged[kept]["temperature"], record


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA's decay at optimiser step ``step`` (from 0): ``min(decay, (1 + step) / (10 + step))``, a warm-up
    so that early weights are not averaged with the random start. The cap ``decay`` is reached only at step
    ``(10 decay - 1) / (1 - decay)`` (0.999: about 9000); before that the EMA's memory is about a ninth of the
    steps so far. Within the default 5000 steps this ramp, not 0.999, sets the weights kept: reaching 0.999 or
    0.9995 early (at steps 1000 / 2000) lowered the final validation loss and sampled worse at matched novelty
    (docs/benchmarks.md)."""
    return min(decay, (1 + step) / (10 + step))


def ema_memory(decay: float) -> int:
    """Steps the EMA weights take to reflect what the network learned (1 / (1 - decay)). Patience never
    stops training sooner after the best score: a plateau shorter than this is the EMA lagging, not the
    network failing (on the synthetic set the scores rise for the first ~500 steps, then fall for 2000)."""
    return int(math.ceil(round(1.0 / (1.0 - decay), 6))) if decay < 1.0 else 0


def overfits(validation: Sequence[Sequence[float]], tolerance: float) -> bool:
    """The latest validation score is more than ``tolerance`` (a share) above the best one so far."""
    best = min(v for _, v in validation)
    return validation[-1][1] > best * (1 + tolerance)


@torch.no_grad()
def validation_loss(diffusion: GaussianDiffusion, model: torch.nn.Module, rows: np.ndarray, seed: int,
                    min_terms: int = 4096, max_repeats: int = 16, codes: Optional[np.ndarray] = None) -> float:
    """Denoising loss of ``model`` on ``rows`` at fixed noise levels with fixed noise (the same every call,
    so scores of different checkpoints differ only by the weights). ``codes``: the rows' condition codes
    (conditional models are scored on their conditional prediction, as they are trained)."""
    device = model_device(model)  # the noise is drawn on the CPU (the same on every device) and moved there
    x0 = torch.from_numpy(np.asarray(rows, np.float32)).to(device)
    repeats = int(min(max_repeats, max(1, math.ceil(min_terms / (len(x0) * VALIDATION_LEVELS)))))
    levels = np.linspace(0, diffusion.num_timesteps - 1, VALIDATION_LEVELS).round().astype(np.int64)
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in levels:
        x = x0.repeat(repeats, 1)
        t = torch.full((len(x),), int(i), dtype=torch.long, device=device)
        cond = None if codes is None else torch.from_numpy(np.asarray(codes, np.int64)).repeat(repeats, 1).to(device)
        noise = torch.randn(x.shape, generator=g).to(device)
        total += float(diffusion.training_loss(model, x, t, noise, cond))
    model.train(was_training)
    return total / len(levels)


def save_checkpoint(run_dir: Path, cfg: TrainConfig, model, ema, opt, gen: torch.Generator, data: TrainingData,
                    state: TrainState, profile_json: Dict, best: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    arrays = {}
    arrays.update(_state_arrays("model.", model.state_dict()))
    arrays.update(_state_arrays("ema.", ema.state_dict()))
    arrays.update(_optim_arrays(opt))
    arrays["rng.loop"] = _rng_array(gen.get_state())
    arrays["rng.torch"] = _rng_array(torch.get_rng_state())
    arrays.update(data.standardizer.to_arrays())
    if best is not None:
        arrays.update(_state_arrays("best.", best))
    meta = {"kind": CHECKPOINT_KIND, "format_version": FORMAT_VERSION, "step": state.step,
            "elapsed": state.elapsed, "history": state.history,
            "running": [state.running, state.count], "config": cfg.to_dict(), "profile": profile_json,
            "validation": state.validation, "best_step": state.best_step, "since_best": state.since_best,
            "stopped": state.stopped}
    path = run_dir / "checkpoints" / f"step_{state.step:07d}.safetensors"
    save_tensors(path, arrays, meta)
    for old in list_checkpoints(run_dir)[: -cfg.train.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path):
    arrays, meta = load_tensors(path, "checkpoint")
    if meta.get("kind") != CHECKPOINT_KIND:
        raise SpeakEmbError(f"{path} is a '{meta.get('kind')}' file, not a training checkpoint")
    return arrays, meta


def _sub(arrays: Dict[str, np.ndarray], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith(prefix)}


# ---- the loop -----------------------------------------------------------------------------------------
def lr_at(cfg: TrainConfig, step: int) -> float:
    tc = cfg.train
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _config_differences(a: Dict, b: Dict, prefix: str = "") -> List[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {vb!r} -> {va!r}")
    return out


def _attach_log_file(run_dir: Path) -> logging.Handler:
    h = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    h.setLevel(logging.INFO)
    logging.getLogger("toucan_speakemb").addHandler(h)
    if logging.getLogger("toucan_speakemb").getEffectiveLevel() > logging.INFO:
        logging.getLogger("toucan_speakemb").setLevel(logging.INFO)
    return h


def load_training_set(data: Union[str, Path, EmbeddingSet], profile: Optional[str] = None) -> EmbeddingSet:
    if isinstance(data, EmbeddingSet):
        return data
    if str(data).startswith("builtin:"):
        from toucan_speakemb.core.synthetic import builtin_set

        es = builtin_set(str(data))
        if profile is not None and profile != es.profile.name:
            raise SpeakEmbError(f"{data} is in profile '{es.profile.name}', not '{profile}'")
        return es
    return EmbeddingSet.load(data, profile=profile)


def train(data: Union[str, Path, EmbeddingSet], out: Union[str, Path], cfg: Optional[TrainConfig] = None,
          progress: bool = True, max_steps: Optional[int] = None, data_name: Optional[str] = None) -> Path:
    """Train (or resume) a generator in ``out``; returns the path of ``generator.safetensors``.

    ``data_name``: where ``data`` came from, for summary.json (given by the CLI, which loads the set itself).

    ``max_steps`` stops early after that many steps of this call (a stand-in for a kill in tests and
    benchmarks); the run can then be resumed with the same call.
    """
    cfg = cfg or TrainConfig()
    device = resolve_device(cfg.train.device, "train.device")  # a device this torch cannot use: before any work
    es = load_training_set(data)
    prepared = prepare_data(es, cfg)  # bad data fails here, before anything is written
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise SpeakEmbError(f"--out {run_dir} is a file, not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(run_dir)
    try:
        with cpu_threads(cfg.train.threads):  # torch's threads and numpy's pools, as they were after the run
            return _train(es, prepared, run_dir, cfg, progress, max_steps,
                          data if data_name is None else data_name, device)
    finally:
        logging.getLogger("toucan_speakemb").removeHandler(handler)
        handler.close()


def _train(es: EmbeddingSet, prepared: Tuple[TrainingData, EmbeddingSet], run_dir: Path, cfg: TrainConfig, progress: bool, max_steps: Optional[int],
           data_source, device: str = "cpu") -> Path:
    cfg_path = run_dir / "config.yaml"
    checkpoints = list_checkpoints(run_dir)
    if cfg_path.exists() and checkpoints:
        import yaml

        stored = yaml.safe_load(cfg_path.read_text()) or {}
        previous = TrainConfig.of_file(stored, str(cfg_path))
        cfg, taken = cfg.resuming(stored)
        if taken:
            log.info("the run was started before %s existed: it goes on as it started (%s)", ", ".join(taken),
                     "; ".join(f"{name}: {value!r}" for name, value in taken.items()))
        # threads, checkpoint keeping and the device do not change the result (the device: float rounding only);
        # everything else (train.steps too: the learning-rate schedule depends on it) must be as before
        free = ("train.threads", "train.keep_checkpoints", "train.device")
        diffs = [d for d in _config_differences(cfg.to_dict(), previous.to_dict()) if not d.startswith(free)]
        if diffs:
            raise SpeakEmbError(f"{run_dir} holds a run with a different config ({diffs[0]}); "
                                f"use another --out or the same config to resume")
    data, train_speakers = prepared
    atomic_write_text(cfg_path, cfg.to_yaml())
    dim = data.standardizer.model_dim  # the data's dimension, + 1 with the polar transform
    log.info("data: %s; training at the %s level on %d rows", es.summary(), cfg.data.level, len(data.rows))
    log.info("device: %s (train.device %s)", device, cfg.train.device)

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    diffusion = build_diffusion(cfg)
    k = subspace_dims(cfg, data)
    if k is not None:
        log.info("the network models the top %d principal directions of %d; the rest is Gaussian (%s)",
                 k, dim, "the fit's own variances" if cfg.model.subspace_rest == "full" else "one pooled variance")
    model = build_model(cfg, dim, data.spec, k)
    part = gaussian_part(model)
    if part is not None:
        w = None if data.level != "balanced" else torch.from_numpy(1.0 / np.bincount(data.row_speaker)[data.row_speaker])
        part.fit_gaussian(torch.from_numpy(data.rows), w)
        if part.n_conditions:
            part.fit_condition_offsets(torch.from_numpy(data.rows), torch.from_numpy(data.codes))
    ema = build_model(cfg, dim, data.spec, k)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    # built and fitted on the CPU (the same on every device), then moved; the optimiser follows the weights
    model.to(device)
    ema.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    state = TrainState(0, [], 0.0)
    best: Optional[Dict[str, torch.Tensor]] = None  # EMA weights of the best validation score

    if checkpoints:
        arrays, meta = load_checkpoint(checkpoints[-1])
        prof = meta.get("profile", {})
        if prof.get("dim") != es.dim or prof.get("name") != es.profile.name:
            raise SpeakEmbError(
                f"{run_dir} was trained on '{prof.get('name')}' ({prof.get('dim')}-dim) data, but --data is "
                f"'{es.profile.name}' ({es.dim}-dim); use another --out"
            )
        try:
            model.load_state_dict(_sub(arrays, "model."))
            ema.load_state_dict(_sub(arrays, "ema."))
            _load_optim(opt, arrays)
            gen.set_state(torch.from_numpy(arrays["rng.loop"].copy()))
            torch.set_rng_state(torch.from_numpy(arrays["rng.torch"].copy()))
        except (KeyError, RuntimeError, ValueError) as e:
            raise SpeakEmbError(f"checkpoint {checkpoints[-1]} does not fit this config/model "
                                f"({str(e).splitlines()[0][:200]})") from None
        if not Standardizer.from_arrays(arrays).same_as(data.standardizer):
            raise SpeakEmbError(f"{run_dir} was trained on different data than --data (its statistics differ); "
                                f"use another --out")
        running, count = meta.get("running", [0.0, 0])
        state = TrainState(int(meta["step"]), meta.get("history", []), float(meta.get("elapsed", 0.0)),
                           float(running), int(count), meta.get("validation", []), int(meta.get("best_step", -1)),
                           int(meta.get("since_best", 0)), bool(meta.get("stopped", False)))
        best = _sub(arrays, "best.") or None
        log.info("resuming from %s (step %d)", checkpoints[-1].name, state.step)

    EmbeddingSet.save(train_speakers, run_dir / "train_speakers.safetensors")
    # the loss in the Gaussian's eigenbasis: the same objective without two d x d products a step (the rows are
    # rotated once; the noise drawn as before is ε in those coordinates); validation stays in the data's space
    rows_in_basis = None  # on the CPU, like data.rows: a batch moves to the device as before
    if part is model and part.trains_in_eigenbasis(diffusion):
        rows_in_basis = (torch.from_numpy(data.rows).double() @ part.eigvecs.cpu().double()).float()
    validating = data.validation is not None
    if validating:
        val_rows, val_codes = data.validation_rows, data.validation_codes
        n_val = int(data.validation.sum())
        if state.best_step < 0:  # step 0: the untrained model (with the Gaussian residual: the Gaussian fit)
            state.validation.append([0, validation_loss(diffusion, ema, val_rows, cfg.seed, codes=val_codes)])
            state.best_step, best = 0, _copy_state(ema)
        log.info("model selection: %d validation speakers (never drawn for training), scored every %d steps",
                 n_val, cfg.train.validate_every)
    total = cfg.train.steps
    stop_at = total if max_steps is None else min(total, state.step + max_steps)
    model.train()
    t0 = time.perf_counter()
    elapsed0 = state.elapsed
    bar = None
    if progress and state.step < stop_at:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=state.step, desc="train", unit="step", dynamic_ncols=True)
    while state.step < stop_at and not state.stopped:
        step = state.step
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        # drawn on the CPU from the checkpointed generator (the same on every device), then moved to the device
        idx = data.draw_index(cfg.train.batch_size, gen)
        t = torch.randint(diffusion.num_timesteps, (len(idx),), generator=gen)
        noise = torch.randn((len(idx), data.rows.shape[1]), generator=gen)
        cond = None
        if data.spec:  # classifier-free guidance: conditions dropped to the null token at random
            codes = data.codes[idx].copy()
            codes[draw_null_mask(len(idx), codes.shape[1], cfg.train.p_uncond, gen)] = 0
            cond = torch.from_numpy(codes).to(device)
        t, noise = t.to(device), noise.to(device)
        if rows_in_basis is not None:
            loss = part.loss_in_eigenbasis(diffusion, rows_in_basis[torch.from_numpy(idx)].to(device), t, noise, cond)
        else:
            loss = diffusion.training_loss(model, torch.from_numpy(data.rows[idx]).to(device), t, noise, cond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        decay = ema_decay_at(step, cfg.train.ema_decay)
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        state.running += float(loss.detach())
        state.count += 1
        state.step += 1
        if bar is not None:
            bar.update(1)
        if state.step % cfg.train.log_every == 0 or state.step == total:
            state.history.append([state.step, state.running / state.count, lr])
            if bar is not None:
                bar.set_postfix(loss=f"{state.running / state.count:.4f}")
            state.running, state.count = 0.0, 0
        if validating and (state.step % cfg.train.validate_every == 0 or state.step == total):
            score = validation_loss(diffusion, ema, val_rows, cfg.seed, codes=val_codes)
            state.validation.append([state.step, score])
            log.info("step %d: validation loss %.5f (best so far %.5f)", state.step, score,
                     min(v for _, v in state.validation))
            if score < min(v for _, v in state.validation[:-1]):
                state.best_step, state.since_best, best = state.step, 0, _copy_state(ema)
            else:
                state.since_best += 1
                # select last: patience only ends a run whose network never beat step 0 (the Gaussian fit);
                # one that overfits (a score beyond the tolerance above the best) ends at once: its best
                # weights will be kept whatever comes after
                by_patience = cfg.train.select == "best" or state.best_step == 0
                waited = (state.since_best >= cfg.train.patience if by_patience
                          else overfits(state.validation, cfg.train.overfit_tolerance))
                if (cfg.train.patience and waited
                        and state.step - state.best_step >= ema_memory(cfg.train.ema_decay)):
                    state.stopped = True
                    log.info("stopping at step %d: %s (best at step %d)", state.step,
                             f"no better validation score for {state.since_best} scores" if by_patience else
                             f"validation loss {score:.5f}, more than {100 * cfg.train.overfit_tolerance:g}% above "
                             f"the best: the network overfits", state.best_step)
        if state.step % cfg.train.checkpoint_every == 0 or state.step == total or state.stopped:
            state.elapsed = elapsed0 + time.perf_counter() - t0
            save_checkpoint(run_dir, cfg, model, ema, opt, gen, data, state, es.profile.to_json(), best)
            write_loss_log(run_dir, state.history)
    if bar is not None:
        bar.close()
    state.elapsed = elapsed0 + time.perf_counter() - t0
    if state.step < total and not state.stopped:
        log.info("stopped at step %d of %d (resume with the same command)", state.step, total)
        return run_dir / "generator.safetensors"

    temperature, overfitting = None, None
    last_wins = (validating and cfg.train.select == "last" and state.best_step > 0)
    if last_wins and overfits(state.validation, cfg.train.overfit_tolerance):
        temperature, overfitting = keep_better_voices(diffusion, ema, best, data, train_speakers.embeddings, cfg,
                                                      state)
        last_wins = overfitting["kept"] == "final"
    if last_wins:
        state.best_step = state.step  # the final weights (they are the EMA's now)
        write_validation_log(run_dir, state.validation)
        log.info("kept the final weights of step %d (validation loss %.5f; best %.5f; step 0: %.5f)", state.step,
                 state.validation[-1][1], min(v for _, v in state.validation), state.validation[0][1])
    elif validating:
        ema.load_state_dict(best)
        write_validation_log(run_dir, state.validation)
        log.info("selected the weights of step %d (validation loss %.5f; step 0: %.5f)%s", state.best_step,
                 dict((int(a), b) for a, b in state.validation)[state.best_step], state.validation[0][1],
                 " instead of the final ones: the network overfits (validation loss %.5f, more than %g%% above "
                 "the best) and %s" % (state.validation[-1][1], 100 * cfg.train.overfit_tolerance,
                                       "their voices are no better" if overfitting["final"]["voices"] else
                                       "their voices could not be judged")
                 if overfitting else "")
    threshold = same_speaker_record(es)
    unseen = unseen_speaker_record(train_speakers.embeddings)
    if unseen["value"] is not None:
        log.info("acceptance of new voices: %d training speakers' cosine to their nearest other one: median %.4f, "
                 "%g quantile %.4f (new voices are accepted up to it)", unseen["speakers"], unseen["median"],
                 unseen["quantile"], unseen["value"])
    if temperature is None:
        temperature = temperature_for_weights(diffusion, ema, data, train_speakers.embeddings, cfg,
                                              state.best_step if validating else state.step)
    log.info("default temperature %.3f (%s)", temperature["value"], temperature_reason(temperature))
    if temperature.get("direction_scales"):
        f = np.asarray(temperature["direction_scales"])
        log.info("the noise of the network's %d principal directions is scaled by %.3f-%.3f (median %.3f), to move "
                 "their voices' variance %g of the way (in log-variance) to the training speakers'", len(f), f.min(),
                 f.max(), np.median(f), cfg.sample.variance_correction)
    gen_path = save_generator(run_dir, cfg, ema, data.standardizer, es, train_speakers, state, threshold, data,
                              unseen, temperature)
    write_loss_log(run_dir, state.history, plot=True, validation=state.validation if validating else None,
                   selected_step=state.best_step if validating else None)
    atomic_write_json(run_dir / "summary.json", {
        "toucan_speakemb_version": __version__,
        "data": str(data_source) if not isinstance(data_source, EmbeddingSet) else "in-memory EmbeddingSet",
        "data_summary": es.summary(),
        "level": cfg.data.level,
        "training_rows": int(len(data.rows)),
        "training_speakers": int(data.n_speakers),
        "steps": state.step,
        "train_seconds": round(state.elapsed, 2),
        "device": device,
        "final_loss": state.history[-1][1] if state.history else None,
        "selected_step": state.best_step if validating else state.step,
        "validation_speakers": int(data.validation.sum()) if validating else 0,
        "stopped_early": state.stopped,
        "generator": gen_path.name,
        "same_speaker_threshold": threshold,
        "unseen_speaker_threshold": {k: v for k, v in unseen.items() if k != "nearest_cosines"},
        "temperature": temperature,
        "overfitting": overfitting,
    })
    log.info("finished %d steps in %.1f s on %s; generator: %s", state.step, state.elapsed, device, gen_path)
    return gen_path


def save_generator(run_dir: Path, cfg: TrainConfig, ema, st: Standardizer, es: EmbeddingSet,
                   train_speakers: EmbeddingSet, state: TrainState, threshold: Optional[Dict] = None,
                   data: Optional[TrainingData] = None, unseen: Optional[Dict] = None,
                   temperature: Optional[Dict] = None) -> Path:
    arrays = _state_arrays("model.", ema.state_dict())
    arrays.update(st.to_arrays())
    # the training speakers travel inside the generator, so one file is enough for novelty checks
    arrays["train_speakers.means"] = train_speakers.embeddings
    threshold = same_speaker_record(es) if threshold is None else threshold
    if threshold["value"] is None:
        log.warning("no same-speaker threshold stored (%s); the same-speaker rule of novelty checks (--threshold "
                    "same-speaker) is not available with this generator", threshold["reason"])
    spec = data.spec if data is not None else None
    if spec:
        # per-value means of the training rows in the model's space: attribute sliders need no data file
        for j, a in enumerate(spec.attributes):
            arrays[f"conditions.{a}.means"] = np.stack([
                data.rows[data.codes[:, j] == i + 1].mean(0) for i in range(len(spec.values[a]))]).astype(np.float32)
    meta = {
        "kind": GENERATOR_KIND,
        "format_version": FORMAT_VERSION,
        "profile": es.profile.to_json(),
        "config": cfg.to_dict(),
        "trained_steps": state.step,
        "selected_step": state.best_step if state.best_step >= 0 else state.step,
        "training_speakers": len(train_speakers),
        "train_speaker_ids": train_speakers.speaker_ids,
        "same_speaker_threshold": threshold,
        "unseen_speaker_threshold": unseen_speaker_record(train_speakers.embeddings) if unseen is None else unseen,
        "temperature": temperature or {"value": 1.0, "chosen": False, "reason": "not chosen"},
        "toucan_speakemb_version": __version__,
    }
    if spec:
        meta["conditions"] = spec.to_json()
    return save_tensors(run_dir / "generator.safetensors", arrays, meta)


def _copy_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_validation_log(run_dir: Path, validation: Sequence[Sequence[float]]) -> None:
    lines = ["step,validation_loss"] + [f"{int(s)},{v:.6g}" for s, v in validation]
    atomic_write_text(run_dir / "validation.csv", "\n".join(lines) + "\n")


def write_loss_log(run_dir: Path, history: Sequence[Sequence[float]], plot: bool = False,
                   validation: Optional[Sequence[Sequence[float]]] = None, selected_step: Optional[int] = None) -> None:
    lines = ["step,loss,lr"] + [f"{int(s)},{l:.6g},{lr:.6g}" for s, l, lr in history]
    atomic_write_text(run_dir / "loss.csv", "\n".join(lines) + "\n")
    if plot and history:
        from toucan_speakemb.core.plots import plot_loss

        plot_loss(history, run_dir / "loss.png", validation or None, selected_step)
