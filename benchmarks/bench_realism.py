"""Realism at matched novelty: the default generator beside simple generators, each read at the novelty of real
speakers it never saw, and the acceptance rule for new voices.

    python benchmarks/bench_realism.py --train TRAIN.npz --unseen UNSEEN.npz [--out DIR] [--run RUN_DIR]
                                       [--n 500] [--seed 0] [--threads 1] [--device D] [--set KEY=VALUE ...]
    python benchmarks/bench_realism.py --train TRAIN.npz --against-validation [--set ...]   # for choosing
    python benchmarks/bench_realism.py --preset a --data ge2e_dev_voices.npz | --preset b   # the other two sets

TRAIN and UNSEEN are interchange sets of one population (e.g. the espeak population's _train and _unseen
halves). The generator trains on TRAIN with the default recipe (plus --set overrides; --run reuses a
finished run folder instead); nothing is tuned on UNSEEN: it is only the reference every row is judged
against, at the speaker level (speaker means), ``--n`` vectors per system, k = 5:

- real speakers (what a perfect generator scores): P, R and the Fréchet floor are those of ``--n`` other real
  speakers of the population (training speakers drawn without replacement); the novelty columns are the
  unseen speakers' own (cosine to their nearest training speaker);
- copies of training speakers (drawn with replacement);
- every baseline (toucan_speakemb/evaluation/baselines.py) and the generator, each at the knob setting
  (bandwidth, scale, mixing range; the generator's temperature) whose median nearest-training cosine is the
  unseen speakers' (bisection), and the generator at its stored default too;
- P / R: k-NN precision and recall (Kynkäänniemi et al. 2019) against the unseen speakers; FD / floor: the
  Fréchet distance over that of real speakers; novelty: median nearest-training cosine and the share above
  the split-half same-speaker threshold (between speaker means, from the training utterances); "as novel"
  is the yardstick of toucan_speakemb/evaluation/matched.py (median within 0.005, share within +0.05);
  variance ratio: total variance over the unseen speakers'; "FD / floor, as many as training speakers": the
  same ratio with as many vectors per system as there are training speakers (at most 5000; the real row and
  its floor: every training speaker, so 1.00 by definition), which leaves the system's error in mean and
  covariance with much less of the sampling noise of ``--n``.

Every row is the mean ± standard deviation over ``--draws`` draws: sample seeds SEED, SEED+1, ... for a
system (at the knob matched with SEED), other real speakers drawn anew for the real row; the Fréchet floor
is the real row's mean. One draw of 500 moves precision by about 0.01 and the Fréchet ratio by about 0.05,
so a difference smaller than the spreads is not a difference.

It also draws 100 voices with the default acceptance rule (VoiceSampler, as `voices add -n 100` does) and
reports the acceptance rate and the accepted voices' novelty beside the unseen speakers'. Writes
``realism.md``, ``realism.json`` and ``precision_novelty.png`` to --out.

``--preset`` builds the two other benchmark sets as bench_generation.py does: (a) the GE2E voices split by
source voice (100 training speakers, 50 held out: the reference, so ``--n`` is 50 there); (b) the synthetic
704-dim population (2000 training speakers, 500 fresh speakers of the true distribution as the reference).

``--against-validation`` judges on the training file alone, for choosing between recipes without looking at
UNSEEN: the reference is the run's validation speakers (never drawn by its training loop), and the training
speakers, the baselines' data and the novelty are the other training speakers only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from toucan_speakemb import EmbeddingSet
from toucan_speakemb.core.fileio import atomic_write_json, atomic_write_text
from toucan_speakemb.core.plots import plot_precision_novelty
from toucan_speakemb.evaluation import metrics as M
from toucan_speakemb.evaluation.baselines import KNOBS, LABELS, fit_mixture, resample_training, sample_baseline
from toucan_speakemb.evaluation.generation import format_table
from toucan_speakemb.evaluation.matched import (REFERENCES, Novelty, as_novel_as, curve, match_knob,
                                                measure_point, novelty_of)
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.training.config import TrainConfig, apply_overrides
from toucan_speakemb.training.trainer import pick_validation_speakers, train
from toucan_speakemb.voices.novelty import VoiceSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import add_device_argument, ge2e_sets, header, set_b  # noqa: E402


def preset_sets(name: str, data=None):
    """(training set, unseen speaker means, description) of benchmark set (a) or (b), split as
    bench_generation.py splits them."""
    if name == "a":
        if not data:
            raise SystemExit("--preset a needs --data path/to/ge2e_dev_voices.npz")
        train, held = ge2e_sets(data)
        return train, held.speaker_means().embeddings, f"(a) {Path(data).name}: speakers of held-out source voices"
    return (set_b("train", 2000), set_b("new", 500).speaker_means().embeddings,
            "(b) 500 fresh speakers of the synthetic population")

LARGE = 5000  # at most this many vectors per system (and every training speaker) for the second Fréchet ratio
COLUMNS = [("setting", "setting", "s"), ("precision_text", "P", "s"), ("recall_text", "R", "s"),
           ("frechet_text", "FD / floor", "s"),
           ("frechet_ratio_large", "FD / floor, as many as training speakers", ".2f"),
           ("variance_ratio", "variance ratio", ".2f"),
           ("novelty_median", "median cos to nearest training", ".3f"),
           ("share_above", "share above split-half thr", ".2f"), ("as_novel", "as novel as unseen", "s")]
GENERATOR_RANGE = (0.5, 1.6)   # temperatures the search covers
CURVE_POINTS = 6


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", help="training speakers (interchange .npz or embedding set)")
    ap.add_argument("--preset", choices=("a", "b"), help="the GE2E set (a, with --data) or the synthetic set (b) "
                    "instead of --train/--unseen")
    ap.add_argument("--data", help="ge2e_dev_voices.npz for --preset a")
    ap.add_argument("--unseen", help="unseen speakers of the same population (the reference)")
    ap.add_argument("--against-validation", action="store_true",
                    help="judge against the run's validation speakers instead (UNSEEN is not read)")
    ap.add_argument("--out", default="bench_realism_out", help="output folder (default: ./bench_realism_out)")
    ap.add_argument("--run", default=None, help="a finished run folder to use instead of training one")
    ap.add_argument("--n", type=int, default=500, help="vectors per system")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=5,
                    help="draws per row (sample seeds; other real speakers) for the mean and spread (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (training and sampling)")
    add_device_argument(ap)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training config override (repeatable), e.g. train.steps=3000; sample.* keys also "
                         "apply to a --run")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = header("bench_realism", args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.preset:
        tr, preset_real, preset_reference = preset_sets(args.preset, args.data)
    elif not args.train:
        raise SystemExit("give --train TRAIN.npz (or --preset a|b)")
    elif not args.unseen and not args.against_validation:
        raise SystemExit("give --unseen UNSEEN.npz (or --against-validation)")
    else:
        tr = EmbeddingSet.load(args.train)
    train_m = tr.speaker_means().embeddings.astype(np.float64)
    n, seed = args.n, args.seed
    thr, _ = M.split_half_threshold(tr.embeddings, np.asarray(tr.speaker_ids))

    # the generator
    if args.run:
        run = Path(args.run)
        train_s = json.loads((run / "summary.json").read_text()).get("train_seconds")
    else:
        run = out / "run"
        if run.exists():  # every benchmark run trains from nothing
            shutil.rmtree(run)
        cfg = TrainConfig.from_dict(apply_overrides({"train": {"threads": args.threads, "device": device}},
                                                    args.overrides), "--set")
        t0 = time.perf_counter()
        train(tr, run, cfg, progress=False)
        train_s = time.perf_counter() - t0
    gen = Generator.load(run, device)
    for item in args.overrides:  # sampling settings apply to a loaded run too
        key, _, value = item.partition("=")
        if key.startswith("sample.") and args.run:
            field = key.split(".", 1)[1]
            setattr(gen.cfg.sample, field, type(getattr(gen.cfg.sample, field))(value))
    summary = json.loads((run / "summary.json").read_text())
    print(f"generator: {run} (selected step {summary.get('selected_step')}, trained {train_s:.0f} s, default "
          f"temperature {gen.temperature:g})")

    if args.against_validation:
        held = pick_validation_speakers(len(train_m), gen.cfg.train.validation_share, gen.cfg.seed)
        real, train_m = train_m[held], train_m[~held]
        n = min(n, len(real))
        reference = (f"{len(real)} validation speakers of the run (judged against the other training speakers; "
                     f"'unseen' below means them)")
    elif args.preset:
        real, reference = preset_real.astype(np.float64), preset_reference
        n = min(n, len(real))
    else:
        real = EmbeddingSet.load(args.unseen).speaker_means().embeddings.astype(np.float64)
        reference = f"{args.unseen}"
    if len(real) > n:
        real = real[np.random.default_rng(seed).choice(len(real), n, replace=False)]
    unseen_nov, unseen_cos = novelty_of(real, train_m, thr)
    target = unseen_nov.median
    print(f"train: {tr.summary()}; reference: {len(real)} speaker means ({reference}); split-half threshold "
          f"{thr:.4f}; their median nearest-training cosine {target:.4f}, share above {unseen_nov.share_above:.2f}")

    # the reference rows: every figure is a mean over draws (sample seeds, or other real speakers)
    draws = range(seed, seed + max(1, args.draws))

    def other_real(s, m=None):  # m = None: n of them; more than there are: all training speakers
        if m is not None and m >= len(train_m):
            return train_m
        return train_m[np.random.default_rng(s + 1).choice(len(train_m), m or n, replace=False)]

    # the Fréchet distance of one draw of n mixes sampling noise (Gaussian samples estimate their covariance
    # with less of it than real speakers do) with the system's error in mean and covariance; with as many
    # vectors per system as there are training speakers (the real row: every training speaker, so 1.00 by
    # definition), most of the system's own sampling noise is gone and its error is what stands out
    large = min(LARGE, len(train_m))
    big_floor = M.frechet_distance(other_real(seed, large), real)

    floor = float(np.mean([M.frechet_distance(other_real(s), real) for s in draws]))
    rows, curves, points = {}, {}, {}

    def add(name, draw, setting, knob=0.0, novelty=None):
        """Row ``name``: ``draw(seed, m=None)`` (m vectors; None: n) measured over the draws (mean and standard
        deviation), and its Fréchet ratio with ``large`` vectors."""
        pts, variance = [], []
        for s in draws:
            x = draw(s)
            pts.append(measure_point(x, knob, real, train_m, thr))
            variance.append(M.total_variance_ratio(x, real))
        stat = {key: [getattr(pt, key) for pt in pts] for key in ("precision", "recall", "frechet",
                                                                    "novelty_median", "share_above")}
        stat["frechet"] = [f / floor for f in stat["frechet"]]
        row = {"setting": setting, "draws": len(pts), "variance_ratio": float(np.mean(variance)),
               "frechet_ratio_large": M.frechet_distance(draw(seed, large), real) / big_floor}
        for key, label in (("precision", "precision"), ("recall", "recall"), ("frechet", "frechet_ratio"),
                           ("novelty_median", "novelty_median"), ("share_above", "share_above")):
            row[label] = float(np.mean(stat[key]))
            row[label + "_sd"] = float(np.std(stat[key], ddof=1)) if len(pts) > 1 else 0.0
        if novelty is not None:  # the real speakers' own novelty (the target)
            row["novelty_median"], row["share_above"] = novelty.median, novelty.share_above
        for label, fmt in (("precision", ".2f"), ("recall", ".2f"), ("frechet_ratio", ".2f")):
            row[label.split("_")[0] + "_text"] = (f"{row[label]:{fmt}} ± {row[label + '_sd']:{fmt}}"
                                                  if len(pts) > 1 else f"{row[label]:{fmt}}")
        nov = Novelty(row["novelty_median"], row["share_above"])
        row["as_novel"] = "yes" if as_novel_as(nov, unseen_nov) else "no"
        rows[name] = row
        print(f"  {name} [{setting}]: P {row['precision_text']} R {row['recall_text']} FD/floor "
              f"{row['frechet_text']} median {row['novelty_median']:.4f}", flush=True)

    add("real speakers (a perfect generator)", other_real, "-", novelty=unseen_nov)
    add("copies of training speakers", lambda s, m=None: resample_training(train_m, m or n, s), "with replacement")

    samplers = {}
    for b in KNOBS:
        if b == "gmm":
            mix = fit_mixture(train_m, seed)
            samplers[LABELS[b]] = (lambda v, s=seed, m=None, mix=mix: mix(m or n, s, v), KNOBS[b])
        else:
            samplers[LABELS[b]] = (lambda v, s=seed, m=None, b=b: sample_baseline(b, train_m, m or n, s, v),
                                    KNOBS[b])
    t0 = time.perf_counter()
    gen.sample(n, seed)
    sample_s = time.perf_counter() - t0
    samplers["default generator"] = (lambda v, s=seed, m=None: gen.sample(m or n, s, temperature=v),
                                     ("temperature", gen.temperature, GENERATOR_RANGE))

    for name, (fn, (knob, default, (lo, hi))) in samplers.items():
        t0 = time.perf_counter()
        v, med, reached = match_knob(fn, lo, hi, train_m, target)
        add(f"{name}, as novel as unseen", lambda s, m=None: fn(v, s, m), f"{knob} {v:.3g}" + ("" if reached else
                                                                                     " (closest reachable)"), v)
        add(f"{name}, default", lambda s, m=None: fn(default, s, m), f"{knob} {default:g}", default)
        grid = np.linspace(lo, hi, CURVE_POINTS)
        pts = curve(fn, sorted(set(grid.tolist()) | {v, default}), real, train_m, thr)
        points[name] = [pt.to_json() for pt in pts]
        curves[name] = [(pt.novelty_median, pt.precision, pt.knob) for pt in pts]
        print(f"  {name}: matched in {time.perf_counter() - t0:.0f} s", flush=True)

    # the acceptance rule, as `voices add -n 100` uses it (against every training speaker, as in use)
    sampler = VoiceSampler(gen, seed=seed)
    t0 = time.perf_counter()
    accepted = sampler.take(100)
    accept_s = time.perf_counter() - t0
    acc_x = np.stack([v.embedding for v in accepted])
    acc_nov, _ = novelty_of(acc_x, train_m, thr)
    acceptance = {"rule": sampler.rule, "threshold": sampler.threshold, "accepted": 100,
                  "drawn": sampler.drawn, "rate": 100 / sampler.drawn, "rejected": sampler.rejected,
                  "accepted_novelty_median": acc_nov.median, "accepted_share_above": acc_nov.share_above,
                  "unseen_novelty_median": target, "unseen_share_above": unseen_nov.share_above,
                  "unseen_accepted_by_rule": float(np.mean(unseen_cos <= sampler.threshold)), "seconds": accept_s}
    print(f"acceptance: {json.dumps(acceptance)}")

    plot_precision_novelty(curves, out / "precision_novelty.png", (target, rows[
        "real speakers (a perfect generator)"]["precision"]), "Precision against novelty (speaker means, k = 5)")
    table = format_table(rows, COLUMNS, f"{n} vectors per system against {len(real)} unseen speakers "
                                       f"(speaker means, k = 5); mean ± standard deviation over {len(draws)} "
                                       f"draws; split-half threshold {thr:.3f}")
    acc_line = (f"Acceptance rule '{acceptance['rule']}' (threshold {acceptance['threshold']:.4f}): 100 voices from "
                f"{acceptance['drawn']} candidates ({acceptance['rate']:.0%} accepted, {accept_s:.1f} s); accepted "
                f"voices' median nearest-training cosine {acc_nov.median:.4f} (unseen speakers {target:.4f}), share "
                f"above the split-half threshold {acc_nov.share_above:.2f} (unseen {unseen_nov.share_above:.2f}); "
                f"the rule would accept {acceptance['unseen_accepted_by_rule']:.0%} of the unseen speakers.")
    text = "\n\n".join([
        "# Realism at matched novelty", f"train: `{args.train or tr.summary()}`; reference: {reference}; generator: selected "
        f"step {summary.get('selected_step')} of {summary.get('steps')}, {train_s:.0f} s training, sampling "
        f"{n} voices {sample_s:.2f} s", table, acc_line, "![precision against novelty](precision_novelty.png)",
        "References:\n\n" + "\n".join(f"- {r}" for r in REFERENCES)]) + "\n"
    atomic_write_text(out / "realism.md", text)
    atomic_write_json(out / "realism.json", {"rows": rows, "curves": points, "acceptance": acceptance,
                                             "split_half_threshold": thr, "train_seconds": train_s,
                                             "sample_seconds": sample_s, "summary": summary,
                                             "overrides": args.overrides})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
