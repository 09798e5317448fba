"""Attribute control: do conditional samples and sliders do what they say, and what do they cost?

    OMP_NUM_THREADS=1 python benchmarks/bench_attributes.py --data path/to/ge2e_dev_voices.npz [--out DIR]
                                                            [--only a|b]
    OMP_NUM_THREADS=1 python benchmarks/bench_attributes.py --population TRAIN.npz UNSEEN.npz [--out DIR]

(a) real GE2E embeddings (--data, or the environment variable SPEAKEMB_GE2E_DATA; not needed with --only b),
    split by source voice (`group`) as in bench_generation.py. The attribute is checkable from the speaker
    names: `pitch` = the direction of the sox pitch shift (`_p-250`, `_p-100` -> down; `_p100`, `_p250` ->
    up; `_p0` -> unknown, trained with the null token only).
(b) a synthetic 704-dim population of known structure (toucan_speakemb.core.synthetic) with known `gender` (a
    side of the first latent axis): 2000 training speakers; fresh speakers from the true distribution (per
    value too) are the reference.
(c) --population: a population with unseen speakers in two interchange .npz files (e.g. the espeak
    population's _train and _unseen halves) whose speakers' sex, accent and base pitch are known. Three
    attributes, each a condition of its own model: `gender` (f / m), `accent` (every value the training
    speakers have) and `pitch`, a label made here from the speaker's `attr_pitch_hz`: "high" above the median
    pitch of the *training* speakers of the speaker's own sex, else "low" (the same two medians label the
    unseen speakers), so that it is not sex again. It is given to the library as a label column
    (``labels={"pitch": ...}``, ``label_pitch`` in an .npz). The unseen speakers are only measured against,
    never tuned on: precision and recall (k = 5) are computed against their speaker means, at their number.
    To fit the time, one unconditional model serves all three attributes, one conditional model is trained
    per attribute, and the "network only" variant is left out; pc1 / eig1 sliders are measured once. Also
    printed: the pitch classifier's accuracy on the unseen speakers by the distance of their pitch from the
    cut (a median split is ambiguous near the cut).

For (a) and (b): the default recipe trained unconditionally and with the attribute as a condition (same data,
same steps), the conditional one both as the default (the Gaussian part's mean moves per value, plus the
network) and with model.condition_gaussian=false (the network's correction alone carries the condition). An
attribute classifier (logistic regression) is trained on the real training speakers; its accuracy on real
unseen speakers is the ceiling to read the shares against. Printed:

1. conditional generation: the share of voices the classifier assigns to the requested value and their mean
   logit of it (how far, not only on which side), per guidance w (0 = unconditional, 1 = plain conditional,
   default sample.guidance), with precision (against all unseen
   real speakers and against those of the requested value), recall, memorised share and close pairs, beside
   the unconditional model; and, at the default guidance, which values the voices of each requested value
   are assigned to, beside the same for the real unseen speakers;
2. sliders (applied to the unconditional model's voices, with the default latent method and with the
   renoise method): the attribute score (the classifier's mean logit of the slider's value, or the coordinate
   along pc1 / eig1) at each slider value, whether it rises monotonically, and precision at each value:
   absolute, relative to the same voices unedited, and relative to the model's own unedited voices *at the
   same score* — for every edited voice the MATCH_K unedited voices nearest to it in score, drawn from a
   pool of N_POOL unedited voices of the same model, so that a slider is judged by what the model itself
   achieves where the slider takes its voices. That ratio uses every voice's own precision indicator (is it
   inside a k-NN ball of the unseen speakers; precision is the mean of it) on both sides; it is printed with
   the mean score gap of the matches and the share of edited voices whose score lies outside the pool's
   range (matched to the pool's nearest extreme). Beside them, the model's own unedited voices with the
   lowest and highest tenth of each score.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import (add_data_argument, add_device_argument, ge2e_sets, header, set_b,  # noqa: E402
                              require_data)

from toucan_speakemb import EmbeddingSet  # noqa: E402
from toucan_speakemb.training.config import SLIDER_METHODS, TrainConfig  # noqa: E402
from toucan_speakemb.evaluation import metrics as M  # noqa: E402
from toucan_speakemb.evaluation.attributes import AttributeClassifier  # noqa: E402
from toucan_speakemb.evaluation.generation import format_table, precision_recall_at  # noqa: E402
from toucan_speakemb.core.fileio import atomic_write_json  # noqa: E402
from toucan_speakemb.generate.generator import Generator, voice_seeds  # noqa: E402
from toucan_speakemb.training.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_VOICES = 1000
N_POOL = 10 * N_VOICES   # unedited voices the score-matched precision of slider edits draws its matches from
MATCH_K = 10             # unedited voices matched to each edited voice by score
GUIDANCE = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)
COND_COLUMNS = [("share", "share assigned", ".2f"), ("logit", "mean logit of value", "+.2f"), ("precision", "P", ".2f"),
                ("precision_value", "P (same value)", ".2f"), ("recall", "R", ".2f"), ("recall_value", "R (same value)", ".2f"), ("memorised", "memorised", ".2f"),
                ("close_pairs", "close pairs", ".3f")]
SLIDER_COLUMNS = [("score", "attribute score", "+.2f"), ("share", "share of value", ".2f"),
                  ("precision", "P", ".2f"), ("precision_rel", "P / P(unedited)", ".2f"),
                  ("precision_matched", "P unedited at same score", ".2f"),
                  ("precision_rel_matched", "P / P(unedited, same score)", ".2f"),
                  ("match_gap", "score gap of matches", ".2f"), ("outside_pool", "outside pool range", ".2f"),
                  ("memorised", "memorised", ".2f")]


def pitch_of(speaker: str) -> str:
    shift = int(re.search(r"_p(-?\d+)$", speaker).group(1))
    return "up" if shift > 0 else "down" if shift < 0 else ""


def precision_at(real: np.ndarray, generated: np.ndarray, size: int):
    """Precision and recall (k = 5) of ``generated`` subsampled to ``size`` rows, averaged over 10 draws."""
    pr = precision_recall_at(real, generated, size)
    return pr["precision"], pr["recall"]


def pitch_labels(pitch_hz: np.ndarray, sex: Sequence[str], medians: Dict[str, float]) -> List[str]:
    """"high" above the median pitch of the speaker's own sex (``medians``, from the training speakers), else
    "low"."""
    return ["high" if p > medians[g] else "low" for p, g in zip(np.asarray(pitch_hz, np.float64), sex)]


def load_population(train_path, unseen_path):
    """The training and unseen sets of a population, the unseen one with the training set's profile, both with
    the `pitch` label (see the module docstring); the two medians the label is cut at; and each set's per-row
    pitch in Hz."""
    sets, pitch = [], []
    for path in (train_path, unseen_path):
        es = EmbeddingSet.load(path, profile=sets[0].profile.name if sets else None)
        with np.load(path, allow_pickle=False) as z:
            if "attr_pitch_hz" not in z.files:
                sys.exit(f"error: {path} has no attr_pitch_hz array (the speakers' base pitch); the pitch "
                         f"attribute is made from it")
            pitch.append(z["attr_pitch_hz"])
        if es.gender is None or es.accent is None:
            sys.exit(f"error: {path} lacks gender or accent arrays; the population mode measures both")
        sets.append(es)
    tr, un = sets
    first = np.unique(np.asarray(tr.speaker_ids), return_index=True)[1]   # the pitch is the speaker's
    sex = np.asarray(tr.gender)[first]
    medians = {g: float(np.median(pitch[0][first][sex == g])) for g in sorted(set(sex))}
    out = []
    for es, hz in zip(sets, pitch):
        out.append(dataclasses.replace(es, labels={**(es.labels or {}), "pitch": pitch_labels(hz, es.gender, medians)}))
    return out[0], out[1], medians, pitch


def pitch_cut_accuracy(tr, tm, un, um, hz_tr, hz_un, medians) -> Dict[str, Dict[str, float]]:
    """How well the pitch classifier (the one evaluate() fits) reads the unseen speakers, by how far their pitch
    lies from the cut, in standard deviations of the pitch of the training speakers of their sex: a median split
    of a continuous attribute is ambiguous near the cut whatever the judge. Printed and returned."""
    def per_speaker(rows_set, hz, means):
        of = dict(zip(rows_set.speaker_ids, np.asarray(hz, np.float64)))
        return np.array([of[sp] for sp in means.speaker_ids])

    hz_t, hz_u = per_speaker(tr, hz_tr, tm), per_speaker(un, hz_un, um)
    sex_t, sex_u = np.asarray(tm.gender), np.asarray(um.gender)
    sd = {g: float(hz_t[sex_t == g].std()) for g in medians}
    z = np.array([(h - medians[g]) / sd[g] for h, g in zip(hz_u, sex_u)])
    clf = AttributeClassifier.fit(tm.embeddings, tm.labels["pitch"])
    right = clf.predict(um.embeddings) == np.asarray(um.labels["pitch"])
    out = {}
    for lo, hi in ((0.0, 0.5), (0.5, 1.0), (1.0, np.inf)):
        pick = (np.abs(z) >= lo) & (np.abs(z) < hi)
        out[f"{lo:g}-{hi:g} SD"] = {"speakers": int(pick.sum()), "accuracy": float(right[pick].mean())}
    print("(c) pitch classifier on unseen speakers by distance of their pitch from the cut (SDs of their sex: "
          + ", ".join(f"{g} {v:.1f} Hz" for g, v in sd.items()) + "): "
          + "; ".join(f"{k}: {v['speakers']} speakers, accuracy {v['accuracy']:.2f}" for k, v in out.items()),
          flush=True)
    return out


def train_run(data, run: Path, overrides, reuse: bool = False, device: str = "auto"):
    """The default recipe with ``overrides`` trained on ``data`` into ``run`` on ``device`` (a finished run
    there is loaded instead when ``reuse``); returns the generator and its training seconds."""
    if not (reuse and (run / "summary.json").exists()):
        if run.exists():
            shutil.rmtree(run)
        cfg = TrainConfig.from_yaml(ROOT / "recipes" / "default" / "hparams.yaml",
                                    ["data.path=null", f"train.device={device}", *overrides])
        train(data, run, cfg, progress=False)
    return Generator.load(run, device), json.loads((run / "summary.json").read_text())["train_seconds"]


def train_pair(tag, data, attribute, out: Path, reuse: bool = False, device: str = "auto"):
    gens = {}
    for name, extra in (("uncond", []), ("cond", [f"model.conditions=[{attribute}]"]),
                        ("cond_net", [f"model.conditions=[{attribute}]", "model.condition_gaussian=false"])):
        gens[name], gens[name + "_train_s"] = train_run(data, out / f"{tag}_{name}", extra, reuse, device)
    return gens


def matched_precision(scores: np.ndarray, pool_scores: np.ndarray, pool_inside: np.ndarray, k: int = MATCH_K):
    """Precision of the unedited ``pool`` voices at the scores of the edited ones: for every edited voice, the
    mean precision indicator of the ``k`` pool voices nearest to it in score; averaged over the edited voices.
    Returns (that precision, the mean |score gap| of the matches, the share of edited voices whose score lies
    outside the pool's range)."""
    order = np.argsort(pool_scores)
    ps, inside = np.asarray(pool_scores, np.float64)[order], np.asarray(pool_inside, np.float64)[order]
    s = np.asarray(scores, np.float64)
    # the k nearest lie within k places either side of the insertion point; a window of 2k shifted inside the
    # pool holds them at its ends too
    start = np.clip(np.searchsorted(ps, s) - k, 0, len(ps) - 2 * k)
    window = start[:, None] + np.arange(2 * k)[None, :]
    gap = np.abs(ps[window] - s[:, None])
    near = np.take_along_axis(window, np.argpartition(gap, k - 1, axis=1)[:, :k], axis=1)
    return (float(inside[near].mean()), float(np.abs(ps[near] - s[:, None]).mean()),
            float(np.mean((s < ps[0]) | (s > ps[-1]))))


def evaluate(tag, gens, attribute, heldout, heldout_labels, train_means, train_labels, thr, size,
             ref_label: str, slider_value=None, generic_sliders: bool = True, real_reference=None):
    """gens: "uncond" and "cond" generators (and "cond_net", measured when given) with their "*_train_s";
    heldout: real unseen speakers (means) with labels; train_means: the generator's training speakers;
    slider_value: the value the attribute slider moves towards (default: the last); generic_sliders: measure
    pc1 / eig1 too; real_reference: (label, means, labels) of further real speakers to print as reference rows."""
    clf = AttributeClassifier.fit(train_means, train_labels)
    values = clf.classes
    heldout_labels = np.asarray(heldout_labels)
    ceiling = {v: clf.share(heldout[heldout_labels == v], v) for v in values}
    variants = [(v, label) for v, label in (("cond", "conditional"), ("cond_net", "conditional (network only)"))
                if v in gens]
    print(f"({tag}) classifier of {attribute} ({', '.join(values)}), trained on {int((np.asarray(train_labels) != '').sum())} "
          f"real training speakers: {ref_label} assigned to their own value: "
          + ", ".join(f"{v} {ceiling[v]:.2f}" for v in values)
          + f" (mean {np.mean(list(ceiling.values())):.2f}); train s: unconditional {gens['uncond_train_s']:.0f}, "
          + ", ".join(f"{label} {gens[v + '_train_s']:.0f}" for v, label in variants), flush=True)

    def row(x, value=None):
        p, r = precision_at(heldout, x, size)
        m = {"precision": p, "recall": r, "memorised": M.memorised_share(x, train_means, thr),
             "close_pairs": M.close_pair_share(x, thr)}
        if value is not None:
            m["share"] = clf.share(x, value)
            m["logit"] = float(clf.logit(x, value).mean())
            same = heldout[heldout_labels == value]
            m["precision_value"], m["recall_value"] = precision_at(same, x, min(size, len(same)))
        return m

    rows = {}
    for v in values:
        rows[f"({tag}) {ref_label}, {attribute}={v} (reference)"] = row(heldout[heldout_labels == v], v)
    if real_reference is not None:
        label, x_ref, ref_labels = real_reference
        for v in values:
            rows[f"({tag}) {label}, {attribute}={v} (reference)"] = row(x_ref[np.asarray(ref_labels) == v], v)
    unc = gens["uncond"].sample(N_VOICES, 0)
    for v in values:
        rows[f"({tag}) unconditional model, assigned {v}"] = row(unc, v)
    cond = gens["cond"]
    default_w = cond.cfg.sample.guidance
    shares, assigned = {}, {}
    for variant, label in variants:
        for w in GUIDANCE:
            for v in values:
                x = gens[variant].sample(N_VOICES, 0, conditions={attribute: v}, guidance=w)
                rows[f"({tag}) {label}, {attribute}={v}, w={w:g}"] = r = row(x, v)
                if variant == "cond":
                    shares.setdefault(w, []).append(r["share"])
                    if w == default_w:
                        assigned[v] = clf.predict(x)
    print(format_table(rows, COND_COLUMNS, f"({tag}) Conditional generation ({N_VOICES} voices each; w = guidance)"))
    print()
    # which values the voices are taken for: the conditional voices at the default guidance beside real unseen
    # speakers of each value (the classifier's own confusions)
    confusion = {}
    for v in values:
        for who, pred in (("voices", assigned[v]), (ref_label, clf.predict(heldout[heldout_labels == v]))):
            confusion[f"({tag}) {attribute}={v}: {who}"] = {u: float(np.mean(pred == u)) for u in values}
    print(format_table(confusion, [(u, u, ".2f") for u in values],
                       f"({tag}) Shares assigned to each {attribute} value: conditional voices at w={default_w:g} "
                       f"and {ref_label}, per requested / true value"))
    print()

    # ---- sliders on the unconditional model's voices: the default method and the renoise one
    g = gens["uncond"]
    seeds = voice_seeds(0, N_VOICES)
    latents, steps = g.known_latents(seeds)
    space = g.slider_space()
    up = slider_value or values[-1]
    sliders = {f"{attribute}:{up}": (-1.0, -0.5, 0.0, 0.5, 1.0)}
    if generic_sliders:
        sliders.update({"pc1": (-2.0, -1.0, 0.0, 1.0, 2.0), "eig1": (-30.0, -15.0, 0.0, 15.0, 30.0)})
    pool = g.sample(N_POOL, 1)
    pool_inside = M.inside_real_balls(heldout, pool)

    def score_of(x, name):
        if name.startswith(attribute):
            return clf.logit(x, up)
        return space.score(g.standardizer.forward(x), name)

    srows, monotonic = {}, {}
    for method in SLIDER_METHODS:
        suffix = "" if method == g.cfg.sample.slider_method else f", {method}"
        for name, vals in sliders.items():
            scores = []
            pool_scores = score_of(pool, name)
            for val in vals:
                x = g.edit(unc, seeds, {name: val}, method=method, latents=latents, steps=steps)
                r = row(x, up)
                sc = score_of(x, name)
                r["score"] = float(sc.mean())
                scores.append(r["score"])
                r["precision_matched"], r["match_gap"], r["outside_pool"] = matched_precision(sc, pool_scores,
                                                                                             pool_inside)
                r["precision_rel_matched"] = float(M.inside_real_balls(heldout, x).mean()) / r["precision_matched"]
                srows[f"({tag}) {name}={val:g}{suffix}"] = r
            base_p = srows[f"({tag}) {name}=0{suffix}"]["precision"]
            for val in vals:
                srows[f"({tag}) {name}={val:g}{suffix}"]["precision_rel"] = \
                    srows[f"({tag}) {name}={val:g}{suffix}"]["precision"] / base_p
            monotonic[name + suffix] = bool(np.all(np.diff(scores) > 0))
    # what the model's own voices score where a slider's ends take voices: the unedited voices with the
    # highest / lowest tenth of scores (the precision a perfect slider could keep there)
    for name in sliders:
        sc = score_of(unc, name)
        for end, pick in (("lowest", np.argsort(sc)[:N_VOICES // 10]), ("highest", np.argsort(sc)[-N_VOICES // 10:])):
            r = row(unc[pick], up)
            r["score"] = float(sc[pick].mean())
            srows[f"({tag}) {name}: unedited voices, {end} tenth"] = r
    print(format_table(srows, SLIDER_COLUMNS, f"({tag}) Sliders on the unconditional model's voices "
                       f"(default method {g.cfg.sample.slider_method}; renoise at strength "
                       f"{g.cfg.sample.slider_strength:g}; attribute score = mean classifier logit of "
                       f"'{up}' for the {attribute} slider, coordinate in SDs for pc1 / eig1; same score: the "
                       f"{MATCH_K} of {N_POOL} unedited voices nearest in score to each edited voice)"))
    print()
    checks = [(f"({tag}) {attribute}: share assigned at the default guidance w={default_w:g} >= 0.90 (mean over values)",
               float(np.mean(shares[default_w])) >= 0.9, f"{np.mean(shares[default_w]):.2f} (per value "
               + ", ".join(f"{v} {s:.2f}" for v, s in zip(values, shares[default_w]))
               + f"; {ref_label} {np.mean(list(ceiling.values())):.2f})")]
    # the cost of guidance, on the same weights (w = 0 is the conditional model's own unconditional mode; a
    # separately trained unconditional model differs by its training run as much as by anything else)
    def mean_of(key, w):
        return float(np.mean([rows[f"({tag}) conditional, {attribute}={v}, w={w:g}"][key] for v in values]))

    p0, pw = mean_of("precision", 0.0), mean_of("precision", default_w)
    m0, mw = mean_of("memorised", 0.0), mean_of("memorised", default_w)
    unc_row = rows[f"({tag}) unconditional model, assigned {values[0]}"]
    checks.append((f"({tag}) {attribute}: guidance cost: precision at w={default_w:g} >= 0.9 x precision at w=0",
                   pw >= 0.9 * p0, f"{pw:.2f} vs {p0:.2f} (separate unconditional model: {unc_row['precision']:.2f})"))
    checks.append((f"({tag}) {attribute}: guidance cost: memorised at w={default_w:g} <= memorised at w=0 + 0.05",
                   mw <= m0 + 0.05, f"{mw:.2f} vs {m0:.2f} (separate unconditional model: {unc_row['memorised']:.2f})"))
    for name in sliders:
        at = [srows[f"({tag}) {name}={val:g}"] for val in sliders[name]]
        ps, rel, matched = ([r[key] for r in at] for key in ("precision", "precision_rel", "precision_rel_matched"))
        renoised = [srows[f"({tag}) {name}={val:g}, renoise"] for val in sliders[name]
                    if f"({tag}) {name}={val:g}, renoise" in srows]
        ends = min(srows[f"({tag}) {name}: unedited voices, {e} tenth"]["precision"] for e in ("lowest", "highest"))
        checks.append((f"({tag}) slider {name}: score monotonic", monotonic[name], ""))
        checks.append((f"({tag}) slider {name}: precision >= 0.9 x that of unedited voices at the same score, at "
                       f"every value", min(matched) >= 0.9, "per value " + ", ".join(f"{m:.2f}" for m in matched)
                       + (" (renoise method: " + ", ".join(f"{r['precision_rel_matched']:.2f}" for r in renoised)
                          + ")" if renoised else "")))
        checks.append((f"({tag}) slider {name}: precision >= 0.8 at every value", min(ps) >= 0.8,
                       f"min {min(ps):.2f} (unedited {srows[f'({tag}) {name}=0']['precision']:.2f}; the model's own "
                       f"voices at the ends of the score: {ends:.2f})"))
        checks.append((f"({tag}) slider {name}: precision >= 0.8 x unedited at every value", min(rel) >= 0.8,
                       f"min {min(rel):.2f}" + (f" (renoise method: {min(r['precision_rel'] for r in renoised):.2f})"
                                                if renoised else "")))
    return rows, srows, checks, shares, confusion


POPULATION_ATTRIBUTES = (("gender", "m"), ("accent", None), ("pitch", "high"))  # attribute, slider towards


def run_population(train_path, unseen_path, out: Path, reuse: bool, device: str):
    tr, un, medians, (hz_tr, hz_un) = load_population(train_path, unseen_path)
    thr, _ = M.same_speaker_threshold(tr.embeddings, tr.speaker_ids)
    tm, um = tr.speaker_means(), un.speaker_means()
    labels = {"gender": (tm.gender, um.gender), "accent": (tm.accent, um.accent),
              "pitch": (tm.labels["pitch"], um.labels["pitch"])}
    print(f"(c) {tr.summary()} train / {un.summary()} unseen; pitch cut at the training speakers' median per sex: "
          + ", ".join(f"{g} {hz:.1f} Hz" for g, hz in medians.items()) + "; "
          + "; ".join(f"{a}: train " + ", ".join(f"{v} {list(labels[a][0]).count(v)}" for v in sorted(set(labels[a][0])))
                      for a in labels), flush=True)
    cut = pitch_cut_accuracy(tr, tm, un, um, hz_tr, hz_un, medians)
    uncond, uncond_s = train_run(tr, out / "c_uncond", [], reuse, device)
    results, checks = {}, []
    for i, (attribute, slider_value) in enumerate(POPULATION_ATTRIBUTES):
        cond, cond_s = train_run(tr, out / f"c_cond_{attribute}", [f"model.conditions=[{attribute}]"], reuse,
                                 device)
        gens = {"uncond": uncond, "uncond_train_s": uncond_s, "cond": cond, "cond_train_s": cond_s}
        train_labels, unseen_labels = labels[attribute]
        rows, srows, c, shares, confusion = evaluate(
            "c", gens, attribute, um.embeddings, unseen_labels, tm.embeddings, train_labels, thr, len(um),
            "unseen speakers", slider_value=slider_value, generic_sliders=i == 0,
            real_reference=("training speakers", tm.embeddings, train_labels))
        results[attribute] = {"rows": rows, "sliders": srows, "shares": shares, "assigned": confusion,
                              "train_seconds": cond_s}
        checks += c
    results["uncond_train_seconds"] = uncond_s
    results["pitch_medians_hz"] = medians
    results["pitch_accuracy_by_distance_from_the_cut"] = cut
    return results, checks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_attributes", help="folder for runs and results.json")
    add_data_argument(ap)
    ap.add_argument("--only", choices=["a", "b"], default=None)
    ap.add_argument("--population", nargs=2, metavar=("TRAIN", "UNSEEN"), default=None,
                    help="(c) only: interchange .npz files of a population's training and unseen speakers")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="load finished run folders of an earlier run of this benchmark under --out instead of "
                         "training them again (only for the same data and code)")
    add_device_argument(ap)
    args = ap.parse_args(argv)
    if args.population:
        if args.only:
            ap.error("--population runs (c) alone; leave out --only")
        for path in args.population:
            if not Path(path).is_file():
                sys.exit(f"error: --population {path}: no such file")
    elif args.only in (None, "a"):
        require_data(args)
    torch.set_num_threads(1)
    device = header("bench_attributes", args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results, checks = {}, []

    if args.population:
        results["c"], checks = run_population(*args.population, out, args.reuse_runs, device)

    if not args.population and args.only in (None, "a"):
        tr, ho = ge2e_sets(args.data, {"pitch": pitch_of})
        thr, _ = M.same_speaker_threshold(tr.embeddings, tr.speaker_ids)
        tm, hm = tr.speaker_means(), ho.speaker_means()
        print(f"(a) {tr.summary()} train / {ho.summary()} held out (by source voice); pitch from speaker names: "
              f"train {tm.labels['pitch'].count('down')} down, {tm.labels['pitch'].count('up')} up, "
              f"{tm.labels['pitch'].count('')} unshifted (unknown)", flush=True)
        gens = train_pair("a", tr, "pitch", out, args.reuse_runs, device)
        rows, srows, c, shares, _ = evaluate("a", gens, "pitch", hm.embeddings, hm.labels["pitch"], tm.embeddings,
                                             tm.labels["pitch"], thr, len(tm), "real held-out speakers")
        results["a"] = {"rows": rows, "sliders": srows, "shares": shares}
        checks += c

    if not args.population and args.only in (None, "b"):
        tr = set_b("train", 2000, attributes=True)
        fresh = set_b("fresh", 5000, attributes=True).speaker_means()
        thr, _ = M.same_speaker_threshold(tr.embeddings, tr.speaker_ids)
        tm = tr.speaker_means()
        print(f"(b) {tr.summary()}; reference: 5000 fresh true speakers; gender: train "
              f"{tm.gender.count('f')} f, {tm.gender.count('m')} m", flush=True)
        gens = train_pair("b", tr, "gender", out, args.reuse_runs, device)
        rows, srows, c, shares, _ = evaluate("b", gens, "gender", fresh.embeddings, fresh.gender, tm.embeddings,
                                             tm.gender, thr, N_VOICES, "fresh true speakers")
        results["b"] = {"rows": rows, "sliders": srows, "shares": shares}
        checks += c

    print("Targets:")
    for name, ok, detail in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))
    results["checks"] = [(n, bool(ok), d) for n, ok, d in checks]
    results["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "results.json", json.loads(json.dumps(results, default=float)))
    print(f"\n(total {time.perf_counter() - t0:.0f} s; results in {out / 'results.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
