"""Attribute control: do conditional samples and sliders do what they say, and what do they cost?

    OMP_NUM_THREADS=1 python benchmarks/bench_attributes.py --data path/to/ge2e_dev_voices.npz [--out DIR]
                                                            [--only a|b]

(a) real GE2E embeddings (--data, or the environment variable SPEAKEMB_GE2E_DATA; not needed with --only b),
    split by source voice (`group`) as in bench_generation.py. The attribute is checkable from the speaker
    names: `pitch` = the direction of the sox pitch shift (`_p-250`, `_p-100` -> down; `_p100`, `_p250` ->
    up; `_p0` -> unknown, trained with the null token only).
(b) a synthetic 704-dim population of known structure (toucan_speakemb.core.synthetic) with known `gender` (a
    side of the first latent axis): 2000 training speakers; fresh speakers from the true distribution (per
    value too) are the reference.

For each: the default recipe trained unconditionally and with the attribute as a condition (same data, same
steps), the conditional one both as the default (the Gaussian part's mean moves per value, plus the network)
and with model.condition_gaussian=false (the network's correction alone carries the condition). An attribute classifier (logistic regression) is trained on the real training speakers; its accuracy
on real unseen speakers is the ceiling to read the shares against. Printed:

1. conditional generation: the share of voices the classifier assigns to the requested value, per guidance
   w (0 = unconditional, 1 = plain conditional, default sample.guidance), with precision (against all unseen
   real speakers and against those of the requested value), recall, memorised share and close pairs, beside
   the unconditional model;
2. sliders (applied to the unconditional model's voices, with the default latent method and with the
   renoise method): the attribute score (the classifier's mean logit of the slider's value, or the coordinate
   along pc1 / eig1) at each slider value, whether it rises monotonically, and precision at each value
   (absolute, and relative to the unedited voices); beside them, the model's own unedited voices with the
   lowest and highest tenth of each score, for the precision the model has where the sliders' ends go.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import (add_data_argument, add_device_argument, header, load_ge2e_split,  # noqa: E402
                              require_data)

from toucan_speakemb import EmbeddingSet, get_profile  # noqa: E402
from toucan_speakemb.training.config import SLIDER_METHODS, TrainConfig  # noqa: E402
from toucan_speakemb.evaluation import metrics as M  # noqa: E402
from toucan_speakemb.evaluation.attributes import AttributeClassifier  # noqa: E402
from toucan_speakemb.evaluation.generation import format_table, precision_recall_at  # noqa: E402
from toucan_speakemb.core.fileio import atomic_write_json  # noqa: E402
from toucan_speakemb.generate.generator import Generator, voice_seeds  # noqa: E402
from toucan_speakemb.core.synthetic import SyntheticPopulation  # noqa: E402
from toucan_speakemb.training.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_VOICES = 1000
GUIDANCE = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)
COND_COLUMNS = [("share", "share assigned", ".2f"), ("precision", "P", ".2f"), ("precision_value", "P (same value)", ".2f"),
                ("recall", "R", ".2f"), ("recall_value", "R (same value)", ".2f"), ("memorised", "memorised", ".2f"),
                ("close_pairs", "close pairs", ".3f")]
SLIDER_COLUMNS = [("score", "attribute score", "+.2f"), ("share", "share of value", ".2f"),
                  ("precision", "P", ".2f"), ("precision_rel", "P / P(unedited)", ".2f"),
                  ("memorised", "memorised", ".2f")]


def pitch_of(speaker: str) -> str:
    shift = int(re.search(r"_p(-?\d+)$", speaker).group(1))
    return "up" if shift > 0 else "down" if shift < 0 else ""


def precision_at(real: np.ndarray, generated: np.ndarray, size: int):
    """Precision and recall (k = 5) of ``generated`` subsampled to ``size`` rows, averaged over 10 draws."""
    pr = precision_recall_at(real, generated, size)
    return pr["precision"], pr["recall"]


def train_pair(tag, data, attribute, out: Path, device: str = "auto"):
    gens = {}
    for name, extra in (("uncond", []), ("cond", [f"model.conditions=[{attribute}]"]),
                        ("cond_net", [f"model.conditions=[{attribute}]", "model.condition_gaussian=false"])):
        run = out / f"{tag}_{name}"
        if run.exists():
            shutil.rmtree(run)
        cfg = TrainConfig.from_yaml(ROOT / "recipes" / "default" / "hparams.yaml",
                                    ["data.path=null", f"train.device={device}", *extra])
        train(data, run, cfg, progress=False)
        gens[name] = Generator.load(run, device)
        gens[name + "_train_s"] = json.loads((run / "summary.json").read_text())["train_seconds"]
    return gens


def evaluate(tag, data, attribute, heldout, heldout_labels, train_means, train_labels, thr, size, out: Path,
             ref_label: str, device: str = "auto"):
    """heldout: real unseen speakers (means) with labels; train_means: the generator's training speakers."""
    gens = train_pair(tag, data, attribute, out, device)
    clf = AttributeClassifier.fit(train_means, train_labels)
    values = clf.classes
    heldout_labels = np.asarray(heldout_labels)
    ceiling = {v: clf.share(heldout[heldout_labels == v], v) for v in values}
    print(f"({tag}) classifier of {attribute} ({', '.join(values)}), trained on {int((np.asarray(train_labels) != '').sum())} "
          f"real training speakers: {ref_label} assigned to their own value: "
          + ", ".join(f"{v} {ceiling[v]:.2f}" for v in values)
          + f"; train s: unconditional {gens['uncond_train_s']:.0f}, conditional {gens['cond_train_s']:.0f}, "
          f"conditional (network only) {gens['cond_net_train_s']:.0f}", flush=True)

    def row(x, value=None):
        p, r = precision_at(heldout, x, size)
        m = {"precision": p, "recall": r, "memorised": M.memorised_share(x, train_means, thr),
             "close_pairs": M.close_pair_share(x, thr)}
        if value is not None:
            m["share"] = clf.share(x, value)
            same = heldout[heldout_labels == value]
            m["precision_value"], m["recall_value"] = precision_at(same, x, min(size, len(same)))
        return m

    rows = {}
    for v in values:
        rows[f"({tag}) {ref_label}, {attribute}={v} (reference)"] = row(heldout[heldout_labels == v], v)
    unc = gens["uncond"].sample(N_VOICES, 0)
    for v in values:
        rows[f"({tag}) unconditional model, assigned {v}"] = row(unc, v)
    cond = gens["cond"]
    shares = {}
    for variant, label in (("cond", "conditional"), ("cond_net", "conditional (network only)")):
        for w in GUIDANCE:
            for v in values:
                x = gens[variant].sample(N_VOICES, 0, conditions={attribute: v}, guidance=w)
                rows[f"({tag}) {label}, {attribute}={v}, w={w:g}"] = r = row(x, v)
                if variant == "cond":
                    shares.setdefault(w, []).append(r["share"])
    print(format_table(rows, COND_COLUMNS, f"({tag}) Conditional generation ({N_VOICES} voices each; w = guidance)"))
    print()

    # ---- sliders on the unconditional model's voices: the default method and the renoise one
    g = gens["uncond"]
    seeds = voice_seeds(0, N_VOICES)
    latents, steps = g.known_latents(seeds)
    space = g.slider_space()
    up = values[-1]
    sliders = {f"{attribute}:{up}": (-1.0, -0.5, 0.0, 0.5, 1.0), "pc1": (-2.0, -1.0, 0.0, 1.0, 2.0),
               "eig1": (-30.0, -15.0, 0.0, 15.0, 30.0)}

    def score_of(x, name):
        if name.startswith(attribute):
            return clf.logit(x, up)
        return space.score(g.standardizer.forward(x), name)

    srows, monotonic = {}, {}
    for method in SLIDER_METHODS:
        suffix = "" if method == g.cfg.sample.slider_method else f", {method}"
        for name, vals in sliders.items():
            scores = []
            for val in vals:
                x = g.edit(unc, seeds, {name: val}, method=method, latents=latents, steps=steps)
                r = row(x, up)
                r["score"] = float(score_of(x, name).mean())
                scores.append(r["score"])
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
                       f"'{up}' for the {attribute} slider, coordinate in SDs for pc1 / eig1)"))
    print()
    default_w = cond.cfg.sample.guidance
    checks = [(f"({tag}) share assigned at the default guidance w={default_w:g} >= 0.90 (mean over values)",
               float(np.mean(shares[default_w])) >= 0.9, f"{np.mean(shares[default_w]):.2f} (per value "
               + ", ".join(f"{v} {s:.2f}" for v, s in zip(values, shares[default_w])) + ")")]
    # the cost of guidance, on the same weights (w = 0 is the conditional model's own unconditional mode; a
    # separately trained unconditional model differs by its training run as much as by anything else)
    def mean_of(key, w):
        return float(np.mean([rows[f"({tag}) conditional, {attribute}={v}, w={w:g}"][key] for v in values]))

    p0, pw = mean_of("precision", 0.0), mean_of("precision", default_w)
    m0, mw = mean_of("memorised", 0.0), mean_of("memorised", default_w)
    unc_row = rows[f"({tag}) unconditional model, assigned {values[0]}"]
    checks.append((f"({tag}) guidance cost: precision at w={default_w:g} >= 0.9 x precision at w=0", pw >= 0.9 * p0,
                   f"{pw:.2f} vs {p0:.2f} (separate unconditional model: {unc_row['precision']:.2f})"))
    checks.append((f"({tag}) guidance cost: memorised at w={default_w:g} <= memorised at w=0 + 0.05", mw <= m0 + 0.05,
                   f"{mw:.2f} vs {m0:.2f} (separate unconditional model: {unc_row['memorised']:.2f})"))
    for name in sliders:
        ps = [srows[f"({tag}) {name}={val:g}"]["precision"] for val in sliders[name]]
        rel = [srows[f"({tag}) {name}={val:g}"]["precision_rel"] for val in sliders[name]]
        renoised = [srows[f"({tag}) {name}={val:g}, renoise"]["precision_rel"] for val in sliders[name]
                    if f"({tag}) {name}={val:g}, renoise" in srows]
        ends = min(srows[f"({tag}) {name}: unedited voices, {e} tenth"]["precision"] for e in ("lowest", "highest"))
        checks.append((f"({tag}) slider {name}: score monotonic", monotonic[name], ""))
        checks.append((f"({tag}) slider {name}: precision >= 0.8 at every value", min(ps) >= 0.8,
                       f"min {min(ps):.2f} (unedited {srows[f'({tag}) {name}=0']['precision']:.2f}; the model's own "
                       f"voices at the ends of the score: {ends:.2f})"))
        checks.append((f"({tag}) slider {name}: precision >= 0.8 x unedited at every value", min(rel) >= 0.8,
                       f"min {min(rel):.2f}" + (f" (renoise method: {min(renoised):.2f})" if renoised else "")))
    return rows, srows, checks, shares


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_attributes", help="folder for runs and results.json")
    add_data_argument(ap)
    ap.add_argument("--only", choices=["a", "b"], default=None)
    add_device_argument(ap)
    args = ap.parse_args(argv)
    if args.only in (None, "a"):
        require_data(args)
    torch.set_num_threads(1)
    device = header("bench_attributes", args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results, checks = {}, []

    if args.only in (None, "a"):
        X, spk, is_train = load_ge2e_split(args.data)
        pitch = np.array([pitch_of(s) for s in spk])
        prof = get_profile("ge2e-256")
        tr = EmbeddingSet(X[is_train], spk[is_train].tolist(), prof, labels={"pitch": pitch[is_train].tolist()})
        ho = EmbeddingSet(X[~is_train], spk[~is_train].tolist(), prof, labels={"pitch": pitch[~is_train].tolist()})
        thr, _ = M.same_speaker_threshold(tr.embeddings, tr.speaker_ids)
        tm, hm = tr.speaker_means(), ho.speaker_means()
        print(f"(a) {tr.summary()} train / {ho.summary()} held out (by source voice); pitch from speaker names: "
              f"train {tm.labels['pitch'].count('down')} down, {tm.labels['pitch'].count('up')} up, "
              f"{tm.labels['pitch'].count('')} unshifted (unknown)", flush=True)
        rows, srows, c, shares = evaluate("a", tr, "pitch", hm.embeddings, hm.labels["pitch"], tm.embeddings,
                                          tm.labels["pitch"], thr, len(tm), out, "real held-out speakers", device)
        results["a"] = {"rows": rows, "sliders": srows, "shares": shares}
        checks += c

    if args.only in (None, "b"):
        pop = SyntheticPopulation(dim=704)
        tr = pop.make_set(2000, 8, seed=11, prefix="train", attributes=True)
        fresh = pop.make_set(5000, 8, seed=12, prefix="fresh", attributes=True).speaker_means()
        thr, _ = M.same_speaker_threshold(tr.embeddings, tr.speaker_ids)
        tm = tr.speaker_means()
        print(f"(b) {tr.summary()}; reference: 5000 fresh true speakers; gender: train "
              f"{tm.gender.count('f')} f, {tm.gender.count('m')} m", flush=True)
        rows, srows, c, shares = evaluate("b", tr, "gender", fresh.embeddings, fresh.gender, tm.embeddings,
                                          tm.gender, thr, N_VOICES, out, "fresh true speakers", device)
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
