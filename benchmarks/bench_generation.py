"""Quality and speed of the default generator against the source's baseline and a Gaussian fit.

    python benchmarks/bench_generation.py --data path/to/ge2e_dev_voices.npz [--out DIR] [--only a|b]
                                          [--b-speakers N] [--set KEY=VALUE ...] [--threads N] [--device D]

(a) real GE2E embeddings (--data, or the environment variable SPEAKEMB_GE2E_DATA; not needed with --only b),
    split by source voice (`group`): two thirds of the groups train, the rest are held-out real speakers;
(b) a synthetic 704-dim population of known structure (toucan_speakemb.core.synthetic): 2000 training speakers
    (--b-speakers), and fresh speakers from the true distribution as the reference.

Each system samples 1000 voices and is compared at the level it generates (speaker means against real
speaker means; utterances against real utterances). Every figure is printed beside what real unseen
speakers score on the same split. Times are reported beside each other from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from toucan_speakemb import EmbeddingSet, get_profile
from toucan_speakemb.core.distributed import DEVICE_HELP, resolve_device
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.evaluation import metrics as M
from toucan_speakemb.evaluation.generation import Reference, format_table, gaussian_fit_sample, measure
from toucan_speakemb.core.fileio import atomic_write_json
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.synthetic import SyntheticPopulation
from toucan_speakemb.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "SPEAKEMB_GE2E_DATA"  # where --data is taken from when not given
N_VOICES = 1000
COLUMNS = [
    ("level", "level", "s"),
    ("precision", "P", ".2f"), ("recall", "R", ".2f"),
    ("frechet_ratio", "FD/floor", ".2f"), ("variance_ratio", "var ratio", ".2f"),
    ("memorised", "memorised", ".2f"), ("memorised_strict", "memorised (split-half thr)", ".2f"),
    ("close_pairs", "close pairs", ".3f"), ("constraints", "constraints kept", ".2f"),
    ("train_s", "train s", ".0f"), ("selected_step", "selected step", "d"), ("sample_s", "sample s", ".2f"),
]


def load_recipe(path: Path, **overrides) -> TrainConfig:
    cfg = TrainConfig.from_yaml(path)
    for key, value in overrides.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def run_system(name, data: EmbeddingSet, cfg: TrainConfig, out: Path, n=N_VOICES, seed=0, device="auto"):
    run = out / name
    if run.exists():  # a finished run would "train" in 0 s: every run here starts from nothing
        shutil.rmtree(run)
    cfg.train.device = device
    train(data, run, cfg, progress=False)
    summary = json.loads((run / "summary.json").read_text())
    gen = Generator.load(out / name, device)
    t0 = time.perf_counter()
    x = gen.sample(n, seed)
    sample_s = time.perf_counter() - t0
    return gen, x, summary, sample_s


def add_data_argument(ap: argparse.ArgumentParser) -> None:
    """--data: the GE2E set of split (a); the benchmarks reach for no file outside the repository themselves."""
    ap.add_argument("--data", default=os.environ.get(DATA_ENV), metavar="PATH",
                    help=f"ge2e_dev_voices.npz, the real GE2E embeddings of split (a) (default: ${DATA_ENV})")


def add_device_argument(ap: argparse.ArgumentParser) -> None:
    """--device: where training and sampling run (the same values and text as the command's --device)."""
    ap.add_argument("--device", default="auto", help=DEVICE_HELP + " Default: auto.")


def header(name: str, args) -> str:
    """The benchmark's first line: the device it runs on (resolved, so 'auto' names the real one) and the
    torch threads; a device this torch cannot use is one error line. Returns the device."""
    try:
        device = resolve_device(args.device, "--device")
    except SpeakEmbError as e:
        sys.exit(f"error: {e}")
    print(f"{name}: device {device} (--device {args.device}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU thread(s)", flush=True)
    return device


def require_data(args) -> None:
    """One clear line and a non-zero exit, before any work, when split (a) has no data file."""
    if not args.data:
        sys.exit(f"error: split (a) needs the GE2E embeddings: give --data path/to/ge2e_dev_voices.npz "
                 f"or set {DATA_ENV} (or run another split with --only)")
    if not Path(args.data).is_file():
        sys.exit(f"error: --data {args.data}: no such file")


def load_ge2e_split(path):
    """GE2E embeddings, speaker names and the training mask: two thirds of the source voices (`group`, in a
    fixed shuffled order) train, the rest are held out — pitch shifts of one voice never straddle the split."""
    z = np.load(path, allow_pickle=False)
    X, spk, grp = z["X"], z["speaker"].astype(str), z["group"].astype(str)
    groups = np.unique(grp)
    np.random.default_rng(0).shuffle(groups)
    return X, spk, np.isin(grp, groups[: round(len(groups) * 2 / 3)])


def ge2e_sets(path, label_of=None):
    """Set (a) as every benchmark splits it: (training set, held-out set) of the GE2E voices (:func:`load_ge2e_split`),
    profile ge2e-256; ``label_of``: label name -> function of the speaker name, for label columns."""
    X, spk, is_train = load_ge2e_split(path)
    prof = get_profile("ge2e-256")

    def part(rows):
        labels = {name: [f(s) for s in spk[rows]] for name, f in (label_of or {}).items()} or None
        return EmbeddingSet(X[rows], spk[rows].tolist(), prof, labels=labels)

    return part(is_train), part(~is_train)


SET_B_DIM, SET_B_PER = 704, 8  # set (b): the synthetic population's dimension, utterances per speaker
SET_B_SEEDS = {"train": 11, "fresh": 12, "new": 13}


def set_b(kind: str, n: int, attributes: bool = False) -> EmbeddingSet:
    """``n`` speakers of set (b), the synthetic 704-dim population, the same in every benchmark: "train" (the
    training speakers), "fresh" (fresh speakers of the true distribution: the reference) or "new" (more fresh
    speakers, measured like a generator)."""
    return SyntheticPopulation(dim=SET_B_DIM).make_set(n, SET_B_PER, seed=SET_B_SEEDS[kind], prefix=kind,
                                                       attributes=attributes)


def constraints_for(real: np.ndarray, min_entry):
    lo, hi = np.percentile(np.linalg.norm(real, axis=1), [1, 99])
    return min_entry, (float(lo), float(hi))


def measured_row(x, ref: Reference, match, floor, strict, level="speaker", **extra) -> dict:
    """One table row: every measure of ``x`` against ``ref``, with the share memorised at the strict
    (split-half) threshold when the level has one."""
    m = measure(x, ref, match=match, fd_floor=floor)
    m.update(level=level, memorised_strict=M.memorised_share(x, ref.train, strict) if strict else None, **extra)
    return m


def evaluate_dataset(tag, train_set: EmbeddingSet, refs: dict, out: Path, recipes: dict, rows: dict,
                     extra: dict, fresh_rows: dict, steps_sweep=True, device="auto"):
    """refs: level -> (Reference, strict threshold, fd floor, match)."""
    for sys_name, (cfg, level) in recipes.items():
        gen, x, summary, sample_s = run_system(f"{tag}_{sys_name}", train_set, cfg, out, device=device)
        ref, strict, floor, match = refs[level]
        rows[f"({tag}) {sys_name}"] = measured_row(
            x, ref, match, floor, strict, level, train_s=summary["train_seconds"], sample_s=sample_s,
            selected_step=summary.get("selected_step", summary["steps"]))
        if sys_name == "default":
            extra[tag] = {"gen": gen, "ref": refs[level]}
    ref, strict, floor, match = refs["speaker"]
    g = gaussian_fit_sample(ref.train, N_VOICES, seed=0)
    rows[f"({tag}) Gaussian fit"] = measured_row(g, ref, match, floor, strict)
    rows.update(fresh_rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_generation", help="folder for runs and results.json")
    add_data_argument(ap)
    ap.add_argument("--only", choices=["a", "b"], default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_device_argument(ap)
    ap.add_argument("--b-speakers", type=int, default=2000,
                    help="training speakers of the synthetic set (b) (default 2000; at least 2000 for the targets)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the default recipe and its variants, e.g. --set train.steps=20000 (repeatable)")
    args = ap.parse_args(argv)
    if args.only in (None, "a"):
        require_data(args)
    if args.b_speakers < N_VOICES:
        ap.error(f"--b-speakers must be at least {N_VOICES} (the Fréchet floor compares {N_VOICES} training speakers)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = header("bench_generation", args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    default_yaml = ROOT / "recipes" / "default" / "hparams.yaml"
    baseline_yaml = ROOT / "recipes" / "source_baseline" / "linear.yaml"
    rows, extra = {}, {}
    t_start = time.perf_counter()

    # ---------------------------------------------------------------- (a) GE2E, held out by source voice
    if args.only in (None, "a"):
        tr, ho = ge2e_sets(args.data)
        thr, eer = M.same_speaker_threshold(tr.embeddings, tr.speaker_ids)
        strict, _ = M.split_half_threshold(tr.embeddings, tr.speaker_ids)
        tm, hm = tr.speaker_means().embeddings, ho.speaker_means().embeddings
        real_means = np.concatenate([tm, hm])
        ref_spk = Reference(hm, tm, thr, *constraints_for(real_means, -0.01))
        ref_utt = Reference(ho.embeddings, tr.embeddings, thr, *constraints_for(np.concatenate([tr.embeddings, ho.embeddings]), -0.01))
        floor_spk = M.frechet_distance(tm, hm)
        floor_utt = np.mean([M.frechet_distance(tr.embeddings[np.random.default_rng(i).choice(len(tr), N_VOICES, replace=False)], ho.embeddings) for i in range(3)])
        refs = {"speaker": (ref_spk, strict, floor_spk, len(tm)), "utterance": (ref_utt, None, floor_utt, N_VOICES)}
        real_row = {
            "level": "speaker", "precision": M.precision_recall(hm, tm)[0], "recall": M.precision_recall(hm, tm)[1],
            "frechet_ratio": 1.0, "variance_ratio": M.total_variance_ratio(hm, real_means),
            "memorised": M.memorised_share(hm, tm, thr), "memorised_strict": M.memorised_share(hm, tm, strict),
            "close_pairs": M.close_pair_share(real_means, thr),
            "constraints": M.constraint_share(real_means, ref_spk.min_entry, ref_spk.norm_range),
        }
        print(f"(a) {tr.summary()} train / {ho.summary()} held out; same-speaker threshold {thr:.3f} "
              f"(EER {eer:.1%}), split-half threshold {strict:.3f}", flush=True)
        recipes = {"default": (TrainConfig.from_yaml(default_yaml, args.set), "speaker"),
                   # what the model keeps of the encoder's constraints without the quantile / polar transforms
                   "default, transform=standard": (TrainConfig.from_yaml(default_yaml, [*args.set, "normalization.transform=standard"]), "speaker"),
                   "default, polar=never": (TrainConfig.from_yaml(default_yaml, [*args.set, "normalization.polar=never"]), "speaker"),
                   "source baseline (linear)": (TrainConfig.from_yaml(baseline_yaml, ["data.path=null"]), "utterance")}
        evaluate_dataset("a", tr, refs, out, recipes, rows, extra,
                         {"(a) real held-out speakers (reference)": real_row}, device=device)

    # ---------------------------------------------------------------- (b) synthetic 704-dim, known truth
    if args.only in (None, "b"):
        pop, per = SyntheticPopulation(dim=SET_B_DIM), SET_B_PER  # the oracle's speakers below
        tr = set_b("train", args.b_speakers)
        fresh_big = set_b("fresh", 5000)
        fresh_same = set_b("new", N_VOICES)
        thr, eer = M.same_speaker_threshold(tr.embeddings, tr.speaker_ids)
        strict, _ = M.split_half_threshold(tr.embeddings, tr.speaker_ids)
        tm, fm, sm = (s.speaker_means().embeddings for s in (tr, fresh_big, fresh_same))
        ref_spk = Reference(fm, tm, thr)
        floor_spk = M.frechet_distance(tm[:N_VOICES], fm)
        ref_utt = Reference(fresh_big.embeddings[: 5 * N_VOICES * 4], tr.embeddings, thr)
        floor_utt = np.mean([M.frechet_distance(tr.embeddings[np.random.default_rng(i).choice(len(tr), N_VOICES, replace=False)], ref_utt.heldout) for i in range(3)])
        refs = {"speaker": (ref_spk, strict, floor_spk, N_VOICES), "utterance": (ref_utt, None, floor_utt, N_VOICES)}
        fresh_row = measured_row(sm, ref_spk, N_VOICES, floor_spk, strict)
        # Two rows that show what the Fréchet ratio and precision can reach. An oracle Gaussian with the
        # *true* mean and covariance (from 40 000 fresh speakers): a fit to 2000 training speakers can only
        # do worse. Copies of training speakers: the figures a pure memoriser gets.
        big = np.concatenate([pop.make_set(5000, per, seed=100 + i, prefix=f"oracle{i}").speaker_means().embeddings
                              for i in range(8)]).astype(np.float64)
        oracle = np.random.default_rng(0).multivariate_normal(big.mean(0), np.cov(big.T), N_VOICES, method="eigh")
        oracle_row = measured_row(oracle, ref_spk, N_VOICES, floor_spk, strict)
        copies = tm[np.random.default_rng(0).choice(len(tm), N_VOICES, replace=False)]
        copies_row = measured_row(copies, ref_spk, N_VOICES, floor_spk, strict)
        print(f"(b) {tr.summary()}; reference: 5000 fresh true speakers; same-speaker threshold {thr:.3f} "
              f"(EER {eer:.1%}), split-half threshold {strict:.3f}", flush=True)
        recipes = {"default": (TrainConfig.from_yaml(default_yaml, args.set), "speaker"),
                   # the network on all 704 directions instead of the top 112 (1800 learned rows / 16): the previous default
                   "default, subspace=full": (TrainConfig.from_yaml(default_yaml, [*args.set, "model.subspace=full"]), "speaker"),
                   "source baseline (linear)": (TrainConfig.from_yaml(baseline_yaml, ["data.path=null"]), "utterance")}
        evaluate_dataset("b", tr, refs, out, recipes, rows, extra,
                         {f"(b) fresh true speakers, {N_VOICES} (reference)": fresh_row,
                          "(b) Gaussian with the true covariance (oracle)": oracle_row,
                          "(b) copies of 1000 training speakers (memoriser)": copies_row}, device=device)

    print()
    print(format_table(rows, COLUMNS, "Generated voices against real held-out speakers (1000 voices per system)"))
    print()

    # ---------------------------------------------------------------- sampler speed and quality by steps
    sweep = {}
    for tag, e in extra.items():
        gen, (ref, strict, floor, match) = e["gen"], e["ref"]
        for sampler, steps in (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ancestral", None)):
            t0 = time.perf_counter()
            x = gen.sample(N_VOICES, 1, sampler=sampler, steps=steps)
            dt = time.perf_counter() - t0
            m = measured_row(x, ref, match, floor, strict, sample_s=dt)
            sweep[f"({tag}) default, {sampler}" + (f" {steps} steps" if steps else f" {gen.diffusion.num_timesteps} steps")] = m
    if sweep:
        print(format_table(sweep, COLUMNS, "Samplers: time for 1000 voices and quality"))
        for tag in extra:
            anc = sweep[f"({tag}) default, ancestral {extra[tag]['gen'].diffusion.num_timesteps} steps"]["sample_s"]
            fast = sweep[f"({tag}) default, ddim {extra[tag]['gen'].cfg.sample.steps} steps"]["sample_s"]
            print(f"({tag}) fast sampler ({extra[tag]['gen'].cfg.sample.steps} DDIM steps) is {anc / fast:.0f}x faster "
                  f"than ancestral sampling")
        print()

    # ---------------------------------------------------------------- the targets
    checks = []
    if "(b) default" in rows:
        d, f = rows["(b) default"], rows[f"(b) fresh true speakers, {N_VOICES} (reference)"]
        checks += [
            ("(b) precision >= 0.9 x fresh", d["precision"] >= 0.9 * f["precision"], f"{d['precision']:.2f} vs {0.9 * f['precision']:.2f}"),
            ("(b) recall >= 0.9 x fresh", d["recall"] >= 0.9 * f["recall"], f"{d['recall']:.2f} vs {0.9 * f['recall']:.2f}"),
            ("(b) memorised <= fresh + 0.05", d["memorised"] <= f["memorised"] + 0.05, f"{d['memorised']:.2f} vs {f['memorised'] + 0.05:.2f}"),
            ("(b) variance ratio in 0.9..1.1", 0.9 <= d["variance_ratio"] <= 1.1, f"{d['variance_ratio']:.2f}"),
            ("(b) Fréchet ratio <= 1.1", d["frechet_ratio"] <= 1.1, f"{d['frechet_ratio']:.2f}"),
        ]
    if "(a) default" in rows:
        d, r = rows["(a) default"], rows["(a) real held-out speakers (reference)"]
        checks += [
            ("(a) memorised <= held-out + 0.10", d["memorised"] <= r["memorised"] + 0.10, f"{d['memorised']:.2f} vs {r['memorised'] + 0.10:.2f}"),
            ("(a) memorised (split-half thr) <= held-out + 0.10", d["memorised_strict"] <= r["memorised_strict"] + 0.10, f"{d['memorised_strict']:.2f} vs {r['memorised_strict'] + 0.10:.2f}"),
            ("(a) close pairs <= real + 0.01", d["close_pairs"] <= r["close_pairs"] + 0.01, f"{d['close_pairs']:.3f} vs {r['close_pairs'] + 0.01:.3f}"),
            ("(a) variance ratio in 0.8..1.25", 0.8 <= d["variance_ratio"] <= 1.25, f"{d['variance_ratio']:.2f}"),
            ("(a) constraints kept >= 0.95", d["constraints"] >= 0.95, f"{d['constraints']:.2f}"),
            ("(a) training <= 300 s", d["train_s"] <= 300, f"{d['train_s']:.0f} s"),
        ]
    for tag in extra:
        fast = sweep[f"({tag}) default, ddim {extra[tag]['gen'].cfg.sample.steps} steps"]["sample_s"]
        checks.append((f"({tag}) 1000 voices with the fast sampler <= 1 s", fast <= 1.0, f"{fast:.2f} s"))
    if checks:
        print("Targets:")
        for name, ok, detail in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    results = {"rows": rows, "samplers": sweep, "checks": [(n, bool(ok), d) for n, ok, d in checks],
               "seconds": time.perf_counter() - t_start}
    atomic_write_json(out / "results.json", json.loads(json.dumps(results, default=float)))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s; results in {out / 'results.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
