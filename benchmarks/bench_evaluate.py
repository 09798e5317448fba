"""`evaluate` at work: the report's measures for the default generator, the source's baseline and the
baselines, and the speed and exactness of the chunked k-NN measures on a large set.

    python benchmarks/bench_evaluate.py --data path/to/ge2e_dev_voices.npz [--out DIR] [--only a|b|scale] [--no-direct]

(a) real GE2E embeddings (--data, or the environment variable SPEAKEMB_GE2E_DATA; not needed with --only b
    or scale), held out by source voice (`group`);
(b) a synthetic 704-dim population of known structure: 2000 training speakers, 2000 fresh true speakers as the
    held-out real set, and 1000 more fresh true speakers evaluated like a generator — what a perfect
    generator would score, to show the measures read as they should;
scale: 20 000 real x 5 000 generated 704-dim vectors: the k-NN measures as `evaluate` computes them
    (chunked, real radii once, symmetric tiles) against a direct computation with the whole distance matrices
    in memory (the baseline of the ratio, and the check that the chunked numbers are exact).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import (ROOT, add_data_argument, add_device_argument, ge2e_sets, header, set_b,  # noqa: E402
                              require_data, run_system)

from toucan_speakemb import EmbeddingSet  # noqa: E402
from toucan_speakemb.training.config import TrainConfig  # noqa: E402
from toucan_speakemb.evaluation import metrics as M  # noqa: E402
from toucan_speakemb.evaluation.generation import format_table  # noqa: E402
from toucan_speakemb.evaluation.report import GeneratedSet, evaluate, write_report  # noqa: E402
from toucan_speakemb.core.fileio import atomic_write_json  # noqa: E402
from toucan_speakemb.core.synthetic import SyntheticPopulation  # noqa: E402

N_VOICES = 1000
COLUMNS = [("precision", "P", ".2f"), ("recall", "R", ".2f"), ("density", "D", ".2f"), ("coverage", "C", ".2f"),
           ("frechet_ratio", "FD/floor", ".2f"), ("variance_ratio", "var ratio", ".2f"),
           ("memorised", "memorised", ".2f"), ("memorised_speaker_threshold", "memorised (mean thr)", ".2f"),
           ("novelty_median", "median nearest cos", ".3f"),
           ("close_pairs", "close pairs", ".3f"), ("effective_share", "effective share", ".2f"),
           ("mean_abs_mean_difference", "mean abs Δ mean", ".3g"),
           ("mean_abs_variance_difference", "mean abs Δ var", ".3g")]


def systems_for(tag: str, train: EmbeddingSet, out: Path, device: str = "auto"):
    default = TrainConfig.from_yaml(ROOT / "recipes" / "default" / "hparams.yaml")
    baseline = TrainConfig.from_yaml(ROOT / "recipes" / "source_baseline" / "linear.yaml", ["data.path=null"])
    gens = []
    for name, cfg in (("default generator", default), ("source baseline (linear)", baseline)):
        _, x, summary, sample_s = run_system(f"{tag}_{name.split()[0]}", train, cfg, out, device=device)
        print(f"({tag}) {name}: trained in {summary['train_seconds']:.0f} s (weights of step "
              f"{summary.get('selected_step', summary.get('trained_steps'))}), 1000 voices in {sample_s:.2f} s",
              flush=True)
        gens.append(GeneratedSet(name, x, train.profile))
    return gens


def run_split(tag, train, held, gens, out: Path, rows: dict):
    t0 = time.perf_counter()
    ev = evaluate(held, gens, train, seed=0)
    write_report(ev, out / f"report_{tag}", tsne=True, title=f"benchmark ({tag})")
    seconds = time.perf_counter() - t0
    for name, row in ev.rows.items():
        rows[f"({tag}) {name}"] = row
    print(f"({tag}) evaluate + report: {seconds:.0f} s; threshold {ev.settings['threshold']:.3f}; "
          f"matched size {ev.settings['matched_size']}", flush=True)
    return ev


def scale(direct: bool, seed: int = 0) -> dict:
    pop = SyntheticPopulation(dim=704)
    rng = np.random.default_rng(seed)
    real = pop.sample_speakers(20_000, rng)
    fake = pop.sample_speakers(5_000, np.random.default_rng(seed + 1)) * 1.05  # a slightly wrong generator
    t0 = time.perf_counter()
    radii = M.knn_sq_radii(real, 5)
    chunked = M.knn_measures(real, fake, 5, real_sq_radii=radii)
    t_chunked = time.perf_counter() - t0
    res = {"chunked_s": t_chunked, "chunked": chunked}
    print(f"scale: chunked k-NN measures, 20000 x 5000 x 704: {t_chunked:.1f} s  {chunked}", flush=True)
    if direct:
        t0 = time.perf_counter()
        r = real.astype(np.float64)
        f = fake.astype(np.float64)
        r2, f2 = (r * r).sum(1), (f * f).sum(1)
        drr = np.maximum(r2[:, None] + r2[None] - 2 * r @ r.T, 0)  # 3.2 GB
        np.fill_diagonal(drr, np.inf)
        rad_r = np.partition(drr, 4, axis=1)[:, 4]
        del drr
        dff = np.maximum(f2[:, None] + f2[None] - 2 * f @ f.T, 0)
        np.fill_diagonal(dff, np.inf)
        rad_f = np.partition(dff, 4, axis=1)[:, 4]
        del dff
        dfr = np.maximum(f2[:, None] + r2[None] - 2 * f @ r.T, 0)
        direct_m = {"precision": float(np.mean((dfr <= rad_r[None]).any(1))),
                    "recall": float(np.mean((dfr <= rad_f[:, None]).any(0))),
                    "density": float((dfr < rad_r[None]).sum() / (5 * len(f))),
                    "coverage": float(np.mean(dfr.min(0) < rad_r))}
        t_direct = time.perf_counter() - t0
        same = all(abs(direct_m[k] - chunked[k]) < 1e-12 for k in direct_m)
        res.update(direct_s=t_direct, direct=direct_m, equal=same, speedup=t_direct / t_chunked)
        print(f"scale: direct (whole matrices, 3.2 GB): {t_direct:.1f} s  {direct_m}", flush=True)
        print(f"scale: chunked / direct time {t_chunked / t_direct:.2f}; results equal: {same}", flush=True)
    print(f"scale: target <= 60 s: {'PASS' if t_chunked <= 60 else 'FAIL'} ({t_chunked:.1f} s)", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_evaluate")
    add_data_argument(ap)
    ap.add_argument("--only", choices=["a", "b", "scale"], default=None)
    ap.add_argument("--no-direct", action="store_true", help="skip the direct (whole-matrix) computation")
    add_device_argument(ap)
    args = ap.parse_args(argv)
    if args.only in (None, "a"):
        require_data(args)
    device = header("bench_evaluate", args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, results = {}, {}
    t_start = time.perf_counter()

    if args.only in (None, "a"):
        train, held = ge2e_sets(args.data)
        run_split("a", train, held, systems_for("a", train, out, device), out, rows)

    if args.only in (None, "b"):
        train, held = set_b("train", 2000), set_b("fresh", 2000)
        gens = systems_for("b", train, out, device)
        gens.append(GeneratedSet("fresh true speakers", set_b("new", N_VOICES).speaker_means().embeddings,
                                 train.profile))
        run_split("b", train, held, gens, out, rows)

    if rows:
        print()
        print(format_table(rows, COLUMNS, "evaluate: every system against real held-out speakers (speaker level)"))
        print()
    if args.only in (None, "scale"):
        results["scale"] = scale(direct=not args.no_direct)
    results["rows"] = rows
    results["seconds"] = time.perf_counter() - t_start
    atomic_write_json(out / "results.json", json.loads(json.dumps(results, default=float)))
    print(f"(total {results['seconds']:.0f} s; results and reports in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
