"""``evaluate``: are generated voices real, new and distinct? All measures of a report, computed from arrays.

Every generated set (and every baseline) is judged against *held-out real speakers*, and every figure is
printed beside what real data score on the same measure: the training speakers measured against the
held-out ones give the floor of the fidelity measures, the held-out speakers measured against the training
ones give the reference of the novelty and distinctness measures.

Sample-size dependent measures (precision, recall, density, coverage, Fréchet distance) are computed on
subsamples of one common size for every row (the smallest of the training set and the generated sets),
averaged over several draws when that size is small, so that rows compare with each other and with the
real-vs-real floor.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.profiles import Profile
from toucan_speakemb.evaluation import metrics as M
from toucan_speakemb.evaluation.baselines import BASELINES, KNOBS, LABELS, fit_mixture, sample_baseline
from toucan_speakemb.evaluation import matched
from toucan_speakemb.evaluation.generation import mean_over_subsamples, subsamples

log = logging.getLogger("toucan_speakemb.evaluate")

LEVELS = ("speaker", "utterance")
REAL_HELDOUT = "real held-out speakers"
# what marks a folder as holding a report (replaced only on request)
REPORT_FILES = ("report.md", "report.html", "metrics.json")
REAL_TRAIN = "real training speakers"
PAIR_SAMPLE = 20_000  # pairs drawn for the distinctness histogram (the share itself counts every pair)


@dataclass
class GeneratedSet:
    """Vectors to evaluate: a voice bank, an embedding set or a bare array, with what is known of its space."""

    name: str
    vectors: np.ndarray
    profile: Optional[Profile]
    source: str = ""



@dataclass
class Evaluation:
    """What :func:`evaluate` found: one row of numbers per system, and the distributions behind them."""

    settings: Dict
    rows: Dict[str, Dict[str, float]]
    novelty: Dict[str, np.ndarray] = field(default_factory=dict)        # cosine to nearest training speaker
    pair_cosines: Dict[str, np.ndarray] = field(default_factory=dict)   # sampled pairs within a set
    dim_variance_ratio: Dict[str, np.ndarray] = field(default_factory=dict)
    dim_mean_difference: Dict[str, np.ndarray] = field(default_factory=dict)
    vectors: Dict[str, np.ndarray] = field(default_factory=dict)        # every set at the compared level
    gender: Optional[Dict] = None
    notes: List[str] = field(default_factory=list)
    # precision against novelty along each baseline's novelty knob (matched.Point rows), and the target
    curves: Dict[str, List] = field(default_factory=dict)
    target: Optional[Dict[str, float]] = None

    def to_json(self) -> Dict:
        def summary(v):
            v = np.asarray(v, dtype=float)
            return {"mean": float(v.mean()), "median": float(np.median(v)), "p05": float(np.percentile(v, 5)),
                    "p95": float(np.percentile(v, 95))}

        return {
            "settings": self.settings,
            "systems": self.rows,
            "novelty_nearest_training_cosine": {k: summary(v) for k, v in self.novelty.items()},
            "distinctness_pair_cosine": {k: summary(v) for k, v in self.pair_cosines.items()},
            "per_dimension_variance_ratio": {k: summary(v) for k, v in self.dim_variance_ratio.items()},
            "gender": self.gender,
            "notes": self.notes,
            "precision_novelty_curves": {k: [p.to_json() for p in v] for k, v in self.curves.items()},
            "matched_novelty_target": self.target,
        }


def _level_vectors(es: EmbeddingSet, level: str) -> np.ndarray:
    return es.speaker_means().embeddings if level == "speaker" else es.embeddings


def _real_utterances(real: EmbeddingSet, train: Optional[EmbeddingSet]) -> Tuple[np.ndarray, np.ndarray]:
    """All real embeddings with speaker ids kept apart by set (the same id in both sets is two speakers)."""
    sets = [("heldout", real)] + ([("train", train)] if train is not None else [])
    x = np.concatenate([s.embeddings for _, s in sets])
    ids = np.concatenate([[f"{tag}:{i}" for i in s.speaker_ids] for tag, s in sets])
    return x, ids


def _threshold(x: np.ndarray, ids: np.ndarray, given: Optional[float]) -> Tuple[float, str]:
    if given is not None:
        return float(given), "given by the user"
    _, counts = np.unique(ids, return_counts=True)
    if (counts >= 2).sum() < 2:
        raise SpeakEmbError("cannot find the same-speaker threshold: fewer than 2 real speakers have 2 or more "
                            "embeddings; give real utterance-level sets or --threshold")
    thr, eer = M.same_speaker_threshold(x, ids)
    return thr, (f"equal-error point of same/different-speaker cosine on {len(x)} real utterance embeddings "
                 f"({int((counts >= 2).sum())} speakers with 2 or more; EER {eer:.1%})")


def _speaker_level_threshold(x: np.ndarray, ids: np.ndarray) -> Optional[float]:
    """The same-speaker threshold between speaker *means* (split-half), or None where it cannot be found."""
    try:
        return M.split_half_threshold(x, ids)[0]
    except ValueError:
        return None


def _check_nonzero(x: np.ndarray, what: str) -> None:
    zero = np.flatnonzero(~np.any(x != 0, axis=1))
    if len(zero):
        raise SpeakEmbError(f"{what} has {len(zero)} all-zero vector(s) (first: row {zero[0]}); a cosine to them "
                            f"is undefined")


def _check_rows(x: np.ndarray, k: int, what: str) -> None:
    if len(x) < k + 1:
        raise SpeakEmbError(f"{what} has {len(x)} vectors; the k-NN measures need at least k+1 = {k + 1}")


def _fidelity(x: np.ndarray, real: np.ndarray, real_sq_radii: np.ndarray, k: int, size: int, draws: int,
              seed: int) -> Dict[str, float]:
    return mean_over_subsamples(x, size, draws, seed, lambda sub: {
        **M.knn_measures(real, sub, k=k, real_sq_radii=real_sq_radii), "frechet": M.frechet_distance(sub, real)})


def _pair_cosine_sample(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(x)
    i = rng.integers(0, n, PAIR_SAMPLE)
    j = (i + rng.integers(1, n, PAIR_SAMPLE)) % n  # j != i
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    if n <= 4096:  # every pair at once (a matrix product of at most 16 M entries) is cheaper than gathering rows
        return (xn @ xn.T)[i, j]
    return np.einsum("ij,ij->i", xn[i], xn[j])


def _gender_classifier(train_x, train_g, test_x, test_g):
    """The attribute classifier of :mod:`.attributes` (logistic regression on standardised embeddings, the
    one the attribute benchmark uses); its accuracy on ``test`` (speakers it never saw)."""
    from toucan_speakemb.evaluation.attributes import AttributeClassifier

    clf = AttributeClassifier.fit(train_x, train_g)
    acc = clf.accuracy(test_x, test_g) if test_x is not None and len(test_x) else None
    return clf, acc


def _each_gender_at_least(genders: Optional[np.ndarray], n: int) -> bool:
    """Labels ("f"/"m" only, as `labelled` keeps them) with at least ``n`` speakers of each gender."""
    if genders is None:
        return False
    _, counts = np.unique(genders, return_counts=True)
    return len(counts) == 2 and counts.min() >= n


def _gender_analysis(real: EmbeddingSet, train: Optional[EmbeddingSet], level: str, systems: Dict[str, np.ndarray],
                     seed: int, notes: List[str]) -> Optional[Dict]:
    def labelled(es: Optional[EmbeddingSet]):
        if es is None or es.gender is None:
            return None, None
        lv = es.speaker_means() if level == "speaker" else es
        g = np.array(lv.gender)
        keep = np.isin(g, ["f", "m"])
        return lv.embeddings[keep], g[keep]

    rx, rg = labelled(real)
    tx, tg = labelled(train)
    if rx is None and tx is None:
        return None
    if _each_gender_at_least(tg, 5):
        fit_x, fit_g, test_x, test_g, how = tx, tg, rx, rg, "trained on the training speakers, tested on the held-out ones"
    elif _each_gender_at_least(rg, 10):
        # no labelled training set: fit on half of the real speakers, test on the other half
        perm = np.random.default_rng(seed).permutation(len(rx))
        half = len(rx) // 2
        fit_x, fit_g, test_x, test_g = rx[perm[:half]], rg[perm[:half]], rx[perm[half:]], rg[perm[half:]]
        how = "trained on half of the real speakers, tested on the other half"
    else:
        notes.append("gender balance not measured: too few labelled speakers of each gender (5 each in a "
                     "training set, or 10 each in the real set)")
        return None
    clf, acc = _gender_classifier(fit_x, fit_g, test_x, test_g)
    shares = {name: float(np.mean(clf.predict(x) == "f")) for name, x in systems.items()}
    real_share = float(np.mean(np.concatenate([g for g in (rg, tg) if g is not None]) == "f"))
    return {"classifier": f"logistic regression on standardised embeddings, {how}",
            "held_out_accuracy": acc, "real_female_share": real_share, "female_share": shares}


def evaluate(real: EmbeddingSet, generated: Sequence[GeneratedSet], train: Optional[EmbeddingSet] = None,
             level: str = "speaker", k: int = 5,
             baselines: Sequence[str] = ("gaussian", "gmm", "kde", "interpolation", "resample"),
             seed: int = 0, threshold: Optional[float] = None, draws: Optional[int] = None,
             knob_systems: Optional[Dict[str, Tuple]] = None) -> Evaluation:
    """Measure generated sets (and baselines fitted to ``train``) against held-out real speakers ``real``.

    ``knob_systems``: name -> (sample(knob, n) -> vectors, knob name, (low, high)): systems traced along a
    novelty knob like the baselines (e.g. a generator across its temperature), shown at the held-out
    speakers' novelty and on the precision-novelty curve (needs ``train``)."""
    if level not in LEVELS:
        raise SpeakEmbError(f"unknown level '{level}' (choose from {', '.join(LEVELS)})")
    if not generated:
        raise SpeakEmbError("nothing to evaluate: give at least one generated set")
    if k < 1:
        raise SpeakEmbError(f"k must be at least 1, got {k}")
    notes: List[str] = []
    if train is not None:
        train.profile.check_same(real.profile, "the training set", "the real set")
        overlap = set(train.speakers) & set(real.speakers)
        if overlap:
            notes.append(f"{len(overlap)} speaker ids occur in both the training and the held-out set "
                         f"(e.g. {sorted(overlap)[0]}): if they are the same people, 'held-out' is not held out")
    for g in generated:
        if g.vectors.ndim != 2 or g.vectors.shape[1] != real.dim:
            raise SpeakEmbError(f"generated set '{g.name}' is {g.vectors.shape[-1]}-dim but the real set is "
                                f"{real.dim}-dim (profile '{real.profile.name}')")
        if g.profile is not None:
            g.profile.check_same(real.profile, f"generated set '{g.name}'", "the real set")
        _check_rows(g.vectors, k, f"generated set '{g.name}'")
        _check_nonzero(g.vectors, f"generated set '{g.name}'")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise SpeakEmbError(f"unknown baseline(s) {', '.join(unknown)} (choose from {', '.join(BASELINES)})")
    if baselines and train is None:
        notes.append("no training set given: baselines, novelty and the real-vs-real floor are not measured")
        baselines = ()

    x_utt, ids_utt = _real_utterances(real, train)
    thr, thr_source = _threshold(x_utt, ids_utt, threshold)
    # means of many recordings are more alike than single ones: at speaker level the utterance threshold calls
    # most real new speakers "memorised"; the split-half threshold between means is the stricter reading
    thr_speaker = _speaker_level_threshold(x_utt, ids_utt) if level == "speaker" else None
    real_l = _level_vectors(real, level).astype(np.float64)
    _check_rows(real_l, k, f"the real set at {level} level")
    _check_nonzero(real_l, f"the real set at {level} level")
    train_l = None if train is None else _level_vectors(train, level).astype(np.float64)
    if train_l is not None:
        _check_rows(train_l, k, f"the training set at {level} level")
        _check_nonzero(train_l, f"the training set at {level} level")

    reserved = {REAL_HELDOUT, REAL_TRAIN, *(LABELS[b] for b in baselines)}
    systems: Dict[str, np.ndarray] = {}
    kinds: Dict[str, str] = {}
    for g in generated:
        if g.name in reserved:
            raise SpeakEmbError(f"generated set name '{g.name}' is taken by a row of the report; name it "
                                f"differently (--generated NAME=PATH)")
        name = g.name if g.name not in systems else f"{g.name} ({len(systems)})"
        systems[name] = np.asarray(g.vectors, dtype=np.float64)
        kinds[name] = "generated"
    n_base = len(generated[0].vectors)
    knob_samplers = {}
    for b in baselines:
        log.info("baseline: %s (%d vectors fitted to %d training vectors)", LABELS[b], n_base, len(train_l))
        if b == "gmm":  # fitted once, sampled at many knob settings
            mix = fit_mixture(train_l, seed)
            knob_samplers[b] = lambda v, mix=mix: mix(n_base, seed, v)
        elif b in KNOBS:
            knob_samplers[b] = lambda v, b=b: sample_baseline(b, train_l, n_base, seed, v)
        systems[LABELS[b]] = (knob_samplers[b](KNOBS[b][1]) if b in knob_samplers
                              else BASELINES[b](train_l, n_base, seed)).astype(np.float64)
        kinds[LABELS[b]] = "baseline"
    # every baseline with a novelty knob also at the setting where it is as novel as the held-out speakers
    ranges = {LABELS[b]: (KNOBS[b][0], KNOBS[b][1], KNOBS[b][2]) for b in knob_samplers}
    knob_samplers = {LABELS[b]: fn for b, fn in knob_samplers.items()}
    for name, (fn, knob, span) in (knob_systems or {}).items() if train_l is not None else ():
        knob_samplers[name] = lambda v, fn=fn: np.asarray(fn(v, n_base))
        ranges[name] = (knob, None, span)
    ev_curves: Dict[str, List] = {}
    target = None
    if knob_samplers:
        real_l_nov, _ = M.cosine_similarity_matrix_max(real_l, train_l)
        novelty_thr = thr_speaker if thr_speaker is not None else thr
        target = {"novelty_median": float(np.median(real_l_nov)),
                  "share_above": float(np.mean(real_l_nov > novelty_thr)), "threshold": novelty_thr}
        for label, fn in knob_samplers.items():
            knob, default, (lo, hi) = ranges[label]
            v, _, reached = matched.match_knob(fn, lo, hi, train_l, target["novelty_median"])
            name = f"{label}, as novel as held-out ({knob} {v:.3g}{'' if reached else ', closest reachable'})"
            systems[name] = fn(v).astype(np.float64)
            kinds[name] = "baseline" if label in LABELS.values() else "generated"
            grid = set(np.linspace(lo, hi, 6).round(4).tolist()) | {round(v, 4)}
            grid = sorted(grid | ({default} if default is not None else set()))
            ev_curves[label] = matched.curve(fn, grid, real_l, train_l, novelty_thr, k)

    sizes = [len(x) for x in systems.values()] + ([len(train_l)] if train_l is not None else [])
    size = min(sizes)
    draws = draws or (5 if size < 1000 else 1)
    log.info("real: %d vectors at %s level; k-NN radii (k=%d)...", len(real_l), level, k)
    real_sq_radii = M.knn_sq_radii(real_l, k)
    moment_ref = train_l if train_l is not None else real_l
    all_real = real_l if train_l is None else np.concatenate([train_l, real_l])

    rows: Dict[str, Dict[str, float]] = {}
    ev = Evaluation({}, rows, notes=notes, curves=ev_curves, target=target)
    floor = None
    if train_l is not None:
        f = _fidelity(train_l, real_l, real_sq_radii, k, size, draws, seed)
        floor = f["frechet"]
        rows[REAL_TRAIN] = {"kind": "reference", "n": len(train_l), **f, "frechet_ratio": 1.0}
        nov, _ = M.cosine_similarity_matrix_max(real_l, train_l)
        ev.novelty[REAL_HELDOUT] = nov
    rows[REAL_HELDOUT] = {
        "kind": "reference", "n": len(real_l),
        "variance_ratio": M.total_variance_ratio(real_l, all_real),
        "close_pairs": M.close_pair_share(real_l, thr),
        "effective_voices": M.effective_voice_count(real_l, thr),
    }
    rows[REAL_HELDOUT]["effective_share"] = rows[REAL_HELDOUT]["effective_voices"] / len(real_l)
    if train_l is not None:
        rows[REAL_HELDOUT]["memorised"] = float(np.mean(ev.novelty[REAL_HELDOUT] > thr))
        if thr_speaker is not None:
            rows[REAL_HELDOUT]["memorised_speaker_threshold"] = float(np.mean(ev.novelty[REAL_HELDOUT] > thr_speaker))
        rows[REAL_HELDOUT]["novelty_median"] = float(np.median(ev.novelty[REAL_HELDOUT]))
    ev.pair_cosines[REAL_HELDOUT] = _pair_cosine_sample(real_l, seed)
    ev.vectors[REAL_HELDOUT] = real_l
    if train_l is not None:
        ev.vectors[REAL_TRAIN] = train_l

    for name, x in systems.items():
        log.info("measuring %s (%d vectors)", name, len(x))
        row: Dict[str, float] = {"kind": kinds[name], "n": len(x)}
        row.update(_fidelity(x, real_l, real_sq_radii, k, size, draws, seed))
        if floor:
            row["frechet_ratio"] = row["frechet"] / floor
        row["variance_ratio"] = M.total_variance_ratio(x, all_real)
        mv = M.mean_variance_differences(moment_ref, x)
        row["mean_abs_mean_difference"] = mv["mean_abs_mean_difference"]
        row["mean_abs_variance_difference"] = mv["mean_abs_variance_difference"]
        ev.dim_variance_ratio[name] = mv["variance_ratio"]
        ev.dim_mean_difference[name] = x.mean(0) - moment_ref.mean(0)
        row["dim_variance_ratio_p05"] = float(np.percentile(mv["variance_ratio"], 5))
        row["dim_variance_ratio_median"] = float(np.median(mv["variance_ratio"]))
        row["dim_variance_ratio_p95"] = float(np.percentile(mv["variance_ratio"], 95))
        row["dim_mean_ratio_median"] = float(np.median(mv["mean_ratio"]))
        if train_l is not None:
            nov, _ = M.cosine_similarity_matrix_max(x, train_l)
            ev.novelty[name] = nov
            row["memorised"] = float(np.mean(nov > thr))
            if thr_speaker is not None:
                row["memorised_speaker_threshold"] = float(np.mean(nov > thr_speaker))
            row["novelty_median"] = float(np.median(nov))
            if target is not None:
                share = float(np.mean(nov > target["threshold"]))
                row["as_novel"] = matched.as_novel_as(matched.Novelty(row["novelty_median"], share), matched.Novelty(
                    target["novelty_median"], target["share_above"]))
        row["close_pairs"] = M.close_pair_share(x, thr)
        row["effective_voices"] = M.effective_voice_count(x, thr)
        # the share depends on N (more vectors, more collisions): read it at the held-out set's size
        row["effective_share"] = float(np.mean([M.effective_voice_count(sub, thr) / len(sub) for sub in
                                                subsamples(x, len(real_l), 5, seed)]))
        ev.pair_cosines[name] = _pair_cosine_sample(x, seed)
        ev.vectors[name] = x
        rows[name] = row

    ev.gender = _gender_analysis(real, train, level, systems, seed, notes)
    if ev.gender:
        for name, share in ev.gender["female_share"].items():
            rows[name]["female_share"] = share
    ev.settings = {
        "level": level, "k": k, "seed": seed, "threshold": thr, "threshold_source": thr_source,
        "speaker_mean_threshold": thr_speaker,
        "matched_size": size, "draws": draws, "profile": real.profile.to_json(),
        "real": {"vectors": len(real_l), "speakers": len(real.speakers), "utterances": len(real)},
        "train": None if train is None else {"vectors": len(train_l), "speakers": len(train.speakers),
                                             "utterances": len(train)},
        "generated": [{"name": g.name, "vectors": len(g.vectors), "source": g.source} for g in generated],
        "baselines": list(baselines), "moments_against": "training set" if train_l is not None else "real set",
    }
    return ev


# --------------------------------------------------------------------------------------------------------
# the written report
# --------------------------------------------------------------------------------------------------------
MAIN_COLUMNS = [  # key, header, format
    ("n", "N", "d"), ("precision", "precision", ".2f"), ("recall", "recall", ".2f"),
    ("density", "density", ".2f"), ("coverage", "coverage", ".2f"), ("frechet", "Fréchet", ".4g"),
    ("frechet_ratio", "Fréchet / floor", ".2f"), ("variance_ratio", "variance ratio", ".2f"),
    ("memorised", "memorised", ".2f"), ("memorised_speaker_threshold", "memorised (speaker-mean threshold)", ".2f"),
    ("novelty_median", "median cos to nearest training", ".3f"), ("as_novel", "as novel as held-out", "yn"),
    ("close_pairs", "close pairs", ".4f"), ("effective_voices", "effective voices", "d"),
    ("effective_share", "effective share at the held-out N", ".2f"),
]

REFERENCES = [
    "Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter (2017). GANs trained by a two time-scale update rule "
    "converge to a local Nash equilibrium. NeurIPS. (Fréchet distance)",
    "Kynkäänniemi, Karras, Laine, Lehtinen, Aila (2019). Improved precision and recall metric for assessing "
    "generative models. NeurIPS.",
    "Naeem, Oh, Uh, Choi, Yoo (2020). Reliable fidelity and diversity metrics for generative models. ICML. "
    "(density, coverage)",
    "Meehan, Chaudhuri, Dasgupta (2020). A non-parametric test to detect data-copying in generative models. "
    "AISTATS. (nearest-training-sample novelty)",
    "Bimbot et al. (2004). A tutorial on text-independent speaker verification. EURASIP JASP. (equal error rate)",
    "Arora, Zhang (2017). Do GANs actually learn the distribution? An empirical study. (birthday-paradox "
    "duplicate test, close pairs)",
    "Hartigan (1975). Clustering Algorithms. Wiley. (leader algorithm, effective voice count)",
    "van der Maaten, Hinton (2008). Visualizing data using t-SNE. JMLR.",
    "Schwarz (1978). Estimating the dimension of a model. Annals of Statistics. (BIC, mixture size)",
    "Alaa, van Breugel, Saveliev, van der Schaar (2022). How faithful is your synthetic data? Sample-level "
    "metrics for evaluating and auditing generative models. ICML. (authenticity)",
    "Silverman (1986). Density Estimation for Statistics and Data Analysis. Chapman & Hall. (kernel density)",
    "Zhang, Cisse, Dauphin, Lopez-Paz (2018). mixup: Beyond empirical risk minimization. ICLR. (interpolation)",
]


def _cell(row: Dict, key: str, spec: str) -> str:
    from toucan_speakemb.evaluation.render import fmt

    v = row.get(key)
    if v is None:
        return "–"
    if spec == "yn":
        return "yes" if v else "no"
    return fmt(int(v), "d") if spec == "d" else fmt(float(v), spec)


def _read_csv_log(path: Path, what: str) -> np.ndarray:
    """(rows, columns) of a run's CSV log below its header line; one error line when it does not parse."""
    try:
        return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as e:
        raise SpeakEmbError(f"{path} is not a readable {what} ({e})") from None


def _read_loss_history(run_dir: Path):
    path = Path(run_dir) / "loss.csv"
    if not path.exists():
        raise SpeakEmbError(f"--run {run_dir}: no loss.csv there (is it a `toucan-speakemb train` run folder?)")
    rows = _read_csv_log(path, "loss log")
    if not len(rows):
        raise SpeakEmbError(f"{path} holds no loss values yet")
    return rows


def _read_validation(run_dir: Path):
    """The validation speakers' scores ([step, loss] rows) and the selected step of a run; (None, None) for a
    run trained without validation speakers."""
    path = Path(run_dir) / "validation.csv"
    if not path.exists():
        return None, None
    rows = _read_csv_log(path, "validation log")
    if len(rows) and rows.shape[1] != 2:
        raise SpeakEmbError(f"{path} is not a readable validation log (expected two columns: step, loss)")
    summary, selected = Path(run_dir) / "summary.json", None
    if summary.exists():
        try:
            selected = json.loads(summary.read_text()).get("selected_step")
        except (ValueError, AttributeError):
            raise SpeakEmbError(f"{summary} is not a readable run summary (JSON object expected)") from None
        if selected is not None and (isinstance(selected, bool) or not isinstance(selected, int)):
            raise SpeakEmbError(f"{summary}: selected_step should be a step number, got {selected!r}")
    return (rows if len(rows) else None), selected


def _why_step_zero(validation, selected) -> Optional[str]:
    """When model selection kept step 0 (the untrained network: with the Gaussian-residual denoiser, the
    Gaussian fit in the model's space), why, in numbers: no later validation score beat step 0's."""
    if selected != 0 or validation is None:
        return None
    steps, scores = validation[:, 0], validation[:, 1]
    zero, later = scores[steps == 0], steps > 0
    if not len(zero) or not later.any():
        return None
    i = int(np.argmin(np.where(later, scores, np.inf)))
    if scores[i] < zero[0]:  # kept for another reason: no claim
        return None
    return (f"Step 0 is the untrained network (with the default Gaussian-residual denoiser, the Gaussian fit in "
            f"the model's space). It was kept because no trained weights scored better on the validation speakers: "
            f"step 0 {float(zero[0]):.5f}, the best trained weights {float(scores[i]):.5f} at step "
            f"{int(steps[i])} ({float(scores[i] / zero[0] - 1):+.1%}): the network learned nothing about speakers "
            f"it did not see that the Gaussian does not already say.")


def write_report(ev: Evaluation, out: str | Path, run_dir: Optional[str | Path] = None, tsne: bool = True,
                 title: str = "toucan-speakemb evaluation", intro: Optional[str] = None) -> Path:
    """Write report.md, report.html (self-contained), metrics.json and the PNG plots into ``out``."""
    from toucan_speakemb.core import plots
    from toucan_speakemb.core.fileio import atomic_write_json, atomic_write_text
    from toucan_speakemb.evaluation.render import Document, fmt

    history = _read_loss_history(Path(run_dir)) if run_dir is not None else None  # fail before writing
    validation, selected = _read_validation(Path(run_dir)) if run_dir is not None else (None, None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = ev.settings
    thr = s["threshold"]
    has_train = s["train"] is not None
    generated = [name for name, r in ev.rows.items() if r.get("kind") == "generated"]
    first = generated[0]
    doc = Document(title)
    if intro:
        doc.paragraph(intro)

    doc.heading("What was compared")
    inputs = [f"real held-out speakers: {s['real']['speakers']} speakers, {s['real']['utterances']} embeddings; "
              f"compared at **{s['level']} level** ({s['real']['vectors']} vectors)"]
    if has_train:
        inputs.append(f"training set: {s['train']['speakers']} speakers, {s['train']['utterances']} embeddings "
                      f"({s['train']['vectors']} vectors at {s['level']} level)")
    inputs += [f"generated: `{g['name']}`, {g['vectors']} vectors" + (f" from `{g['source']}`" if g["source"] else "")
               for g in s["generated"]]
    inputs.append(f"profile `{s['profile']['name']}` ({s['profile']['dim']}-dim); k = {s['k']}; seed {s['seed']}")
    inputs.append(f"same-speaker threshold {thr:.4f}: {s['threshold_source']}")
    if s.get("speaker_mean_threshold") is not None:
        inputs.append(f"speaker-mean threshold {s['speaker_mean_threshold']:.4f}: the equal-error point between the "
                      f"means of two halves of one speaker's recordings and the means of different speakers "
                      f"(split-half), the stricter reading for speaker-level vectors")
    doc.bullets(inputs)
    doc.paragraph(f"Sample-size dependent measures (precision, recall, density, coverage, Fréchet distance) are "
                  f"computed on {s['matched_size']} vectors of every system"
                  + (f", averaged over {s['draws']} random subsamples" if s["draws"] > 1 else "")
                  + ", so rows compare with each other. Grey rows are real data: read every figure beside them.")
    doc.bullets(ev.notes)

    doc.heading("Summary")
    names = list(ev.rows)
    ref_idx = [i for i, n in enumerate(names) if ev.rows[n].get("kind") == "reference"]
    doc.table(["system"] + [h for _, h, _ in MAIN_COLUMNS],
              [[n] + [_cell(ev.rows[n], k, f) for k, _, f in MAIN_COLUMNS] for n in names], ref_idx)

    doc.heading("Fidelity and diversity")
    doc.paragraph("**Fréchet distance** (Heusel et al. 2017): the distance between Gaussian fits of a system's vectors "
                  "and of the held-out real ones, |μ₁−μ₂|² + Tr(Σ₁+Σ₂−2(Σ₁Σ₂)^½). The **floor** is the same distance "
                  "between the real training and the real held-out speakers: two samples of real speakers are this far "
                  "apart, so a ratio near 1 is as good as real data at this size.")
    doc.paragraph(f"**Precision / recall** (Kynkäänniemi et al. 2019, k = {s['k']}): precision is the share of generated "
                  "vectors inside the real manifold (the union of balls around real vectors reaching their k-th "
                  "nearest real neighbour) — realism; recall is the share of real vectors inside the generated "
                  "manifold — diversity. **Density / coverage** (Naeem et al. 2020): density counts how many real balls "
                  "hold each generated vector, divided by k (about 1 for real data, robust to outliers); coverage is "
                  "the share of real vectors whose ball holds at least one generated vector.")
    doc.paragraph("**Variance ratio**: total variance (trace of the covariance) of a system over that of all real "
                  "vectors; below 1 the voices are shrunk towards the centre (the source presentation's collapse), "
                  "above 1 they are spread wider than real speakers.")

    pca_path = plots.plot_pca(ev.vectors[REAL_HELDOUT], ev.vectors[first], out / "pca.png",
                              f"PCA: real held-out (red) vs {first} (blue)",
                              extra={REAL_TRAIN: (ev.vectors[REAL_TRAIN], "tab:gray")} if has_train else None)
    doc.image(pca_path, "The first two principal axes of the real held-out vectors.")
    if tsne:
        tsne_path = plots.plot_tsne(ev.vectors[REAL_HELDOUT], ev.vectors[first], out / "tsne.png",
                                    f"t-SNE: real held-out (red) vs {first} (blue)", seed=s["seed"])
        doc.image(tsne_path, "t-SNE of real (red) and generated (blue) vectors, as in the source presentation "
                             "(van der Maaten & Hinton 2008); distances between clusters in a t-SNE map mean little.")

    if has_train:
        doc.heading("Novelty: are the voices new?")
        doc.paragraph("For every vector, the cosine similarity to its **nearest training speaker** (Meehan et al. 2020 "
                      "argue for nearest-training-sample tests of copying). The **memorised** share is the share above "
                      f"the same-speaker threshold ({thr:.3f}, the equal-error point of same/different-speaker cosine "
                      "on real embeddings; Bimbot et al. 2004): vectors a verification system would take for a "
                      "training speaker. Real held-out speakers show how often genuinely new people fall there too. Speaker "
                      "means are more alike than single recordings, so at speaker level the same share is also given "
                      "above the speaker-mean (split-half) threshold.")
        copies = LABELS["resample"]  # all at 1.0: it would flatten every other curve
        hist = {n: ev.novelty[n] for n in [REAL_HELDOUT] + [x for x in names if x in ev.novelty
                                                             and x not in (REAL_HELDOUT, copies)]}
        doc.image(plots.plot_histograms(hist, out / "novelty.png", "cosine to the nearest training speaker",
                                        "novelty", thr), "Distribution of the cosine to the nearest training speaker "
                                                         "(resampled copies, all at 1.0, are left out).")

    if ev.target is not None:
        t = ev.target
        doc.heading("Precision at matched novelty")
        doc.paragraph(
            "Precision means something only at equal novelty: a system that stays next to training speakers "
            "(kernel density at a small bandwidth, interpolation between neighbours) is precise because it "
            "re-makes people. Every baseline is therefore also shown at the setting of its novelty knob where "
            "its median cosine to the nearest training speaker is the held-out speakers' "
            f"({t['novelty_median']:.3f}). A system is **as novel as held-out speakers** when its median is within "
            f"±{matched.MEDIAN_TOLERANCE} of theirs and its share above the "
            f"{'speaker-mean (split-half)' if s.get('speaker_mean_threshold') is not None else 'same-speaker'} "
            f"threshold ({t['threshold']:.3f}) is at most {matched.SHARE_TOLERANCE} above theirs "
            f"({t['share_above']:.2f}); the authenticity of Alaa et al. (2022) asks the same of single samples.")
        gen_points = {n: [(ev.rows[n]["novelty_median"], ev.rows[n]["precision"], 0.0)] for n in generated
                      if "novelty_median" in ev.rows[n]}
        curves = {n: [(p.novelty_median, p.precision, p.knob) for p in pts] for n, pts in ev.curves.items()}
        held_p = ev.rows[REAL_TRAIN]["precision"] if REAL_TRAIN in ev.rows else None
        # a generated set also traced along its knob (the demo's generator) is drawn as its curve
        doc.image(plots.plot_precision_novelty({**gen_points, **curves}, out / "precision_novelty.png",
                                               (t["novelty_median"], held_p) if held_p is not None else None),
                  "Precision against the median cosine to the nearest training speaker, each baseline (and a "
                  "generator traced across its temperature) along its knob (the end values labelled); the star: "
                  "real speakers (precision of the real training speakers, novelty of the held-out ones), where a "
                  "perfect generator sits.")

    doc.heading("Distinctness: are the voices different from each other?")
    doc.paragraph("**Close pairs**: the share of all pairs of a system's vectors above the same-speaker threshold — pairs a "
                  "listener or a verification system would take for one speaker (a birthday-paradox duplicate test, "
                  "Arora & Zhang 2017). **Effective voices**: greedy leader clustering (Hartigan 1975) at the threshold; "
                  "the number of representatives no two of which are above it — how many distinguishable voices N "
                  "vectors hold.")
    doc.image(plots.plot_histograms({n: ev.pair_cosines[n] for n in names if n in ev.pair_cosines},
                                    out / "distinctness.png", "cosine between two vectors of one set",
                                    "distinctness", thr),
              f"Cosine between random pairs within each set ({PAIR_SAMPLE} pairs).")

    doc.heading("Moments: the source presentation's table")
    doc.paragraph(f"Mean absolute difference of the per-dimension means and of the per-dimension variances between "
                  f"the {s['moments_against']} and each system, as in the source presentation's Table 1; then the "
                  "spread of the per-dimension variance ratios and the median per-dimension mean ratio (1 = matched; a mean "
                  "ratio means little for dimensions whose real mean is near zero).")
    systems = [n for n in names if ev.rows[n].get("kind") != "reference"]
    doc.table(["system", "mean abs Δ mean", "mean abs Δ variance", "variance ratio p05", "median", "p95",
               "mean ratio median"],
              [[n, fmt(ev.rows[n]["mean_abs_mean_difference"], ".4g"), fmt(ev.rows[n]["mean_abs_variance_difference"], ".4g"),
                fmt(ev.rows[n]["dim_variance_ratio_p05"], ".2f"), fmt(ev.rows[n]["dim_variance_ratio_median"], ".2f"),
                fmt(ev.rows[n]["dim_variance_ratio_p95"], ".2f"), fmt(ev.rows[n]["dim_mean_ratio_median"], ".2f")]
               for n in systems])
    doc.image(plots.plot_dimension_ratios({n: ev.dim_variance_ratio[n] for n in systems}, out / "dimensions.png"),
              "Per-dimension variance ratios, sorted.")

    if ev.gender:
        g = ev.gender
        doc.heading("Gender balance")
        doc.paragraph(f"A {g['classifier']} (held-out accuracy {fmt(g['held_out_accuracy'], '.2f')}) judges the "
                      f"generated voices; real speakers are {g['real_female_share']:.0%} female.")
        doc.table(["system", "judged female"], [[n, f"{v:.0%}"] for n, v in g["female_share"].items()])

    if history is not None:
        doc.heading("Training")
        doc.image(plots.plot_loss(history[:, :2], out / "loss.png", validation, selected),
                  f"Training loss of `{run_dir}`" + (f"; model selection kept the weights of step {selected}."
                                                     if selected is not None else "."))
        why = _why_step_zero(validation, selected)
        if why:
            doc.paragraph(why)

    doc.heading("Baselines")
    doc.bullets([
        "**Gaussian fit**: a full-covariance Gaussian fitted to the training vectors — what plain statistics give.",
        "**Gaussian mixture**: a mixture (size and covariance form, shared or per component, chosen by BIC, "
        "Schwarz 1978) in the principal subspace "
        "explaining 95% of the training variance, the other directions drawn with their own variances.",
        "**kernel density**: a training vector plus Gaussian noise of *bandwidth* times the training covariance's "
        "standard deviations (Silverman 1986).",
        "**interpolation of neighbours**: a point between a training vector and one of its 5 nearest, at a weight "
        "drawn uniformly up to the *mixing* range (0.5: the midpoint; Zhang et al. 2018, mixup).",
        "Novelty knobs: *scale* of the Gaussians' standard deviations, the kernel's *bandwidth*, the *mixing* "
        "range; the larger, the farther from the training speakers.",
        "**resampled training (copies)**: training vectors drawn with replacement — the memorising upper bound on "
        "fidelity, with no new voice at all.",
    ])
    doc.heading("References")
    doc.bullets(REFERENCES)

    atomic_write_text(out / "report.md", doc.to_markdown(out))
    atomic_write_text(out / "report.html", doc.to_html())
    atomic_write_json(out / "metrics.json", ev.to_json())
    return out / "report.md"
