"""Benchmark: the plugin's per-utterance overhead over plain Toucan synthesis, as a ratio (target <= 2%).

For each Toucan checkout given (TOUCAN_V22_DIR for v2.2, TOUCAN_V3_DIR for v3.x), in a separate process (one
checkout per process), with one torch thread, on CPU:

- builds the release's own TTS and vocoder architectures at their default sizes with random weights, saved
  in the checkpoint layout its interface loads (speed does not depend on the weights), and the real
  inference interface from them (``ToucanModels``, as `synth` does; no Stand-in);
- trains the default recipe on the built-in population of known structure at the model's width (labelled
  with the model's profile): with its stored utterance-level threshold most candidates are rejected, as
  with real data, so the cost of rejection is in the figures;
- baseline: plain synthesis of a short sentence, ``interface(text)``, median of a few runs (five frames per
  phone, about 2.4 s of audio: v2.2's random duration predictor is set to it, v3.x is given the durations);
- plugin: per utterance, a fresh voice with the default fast sampler (DDIM, the recipe's steps), its
  novelty and distinctness checks, injection into the interface and restoring afterwards — timed over many
  utterances without synthesis (mean), both with the sampler's prefetching (at least 16 candidates per
  generator call, more when most are rejected: the default) and with a minimum of one per call;
- end to end: the same sentence with the plugin, each run paired with a plain one (interleaved), median
  of the ratios; the sampler is past its first calls (their block size is still adapting).

    TOUCAN_V22_DIR=path/to/IMS-Toucan-v2.2 TOUCAN_V3_DIR=path/to/IMS-Toucan-v3.1.2 python benchmarks/bench_synth_overhead.py

Without a checkout it says so and exits. v3.x needs SpeechBrain's ECAPA in its Models/Embedding folder;
the benchmark builds a random-weight one in a view of the checkout (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the SpeechBrain model-folder builder shared with the tests

TEXT = "Hello, this is a short sentence."

WORKER = """
import json, statistics, sys, time
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, CHECKOUT)
from toucan_speakemb import EmbeddingSet, get_profile
from toucan_speakemb.adapters import ToucanModels, random_toucan
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.novelty import VoiceSampler
from toucan_speakemb.core.synthetic import SyntheticPopulation
from toucan_speakemb.training.trainer import train

tts, voc = (random_toucan.build_v22 if FAMILY == "v2.2" else random_toucan.build_v3)(WORK + "/models")
adapter = ToucanModels(CHECKOUT, tts, voc).load()
it = adapter.interface

p = adapter.profile
# the built-in population of known structure at the model's width (overlapping speaker clusters): with its
# utterance-level threshold most candidates are rejected, as with real data, so rejection is part of the cost
synth = SyntheticPopulation(dim=p.dim).make_set(600, 8, seed=1)
es = EmbeddingSet(synth.embeddings, synth.speaker_ids, p)
cfg = TrainConfig.from_yaml(RECIPE, ["train.threads=1"])
train(es, WORK + "/gen", cfg, progress=False)
gen = Generator.load(WORK + "/gen")
adapter.check_generator(gen)

kw = {}
if FAMILY == "v3":  # random prosody weights predict ~nothing; five frames per phone, as v2.2's build fixes them
    n_phones = len(it.text2phone.string_to_tensor(TEXT))
    kw = {"durations": torch.full((n_phones,), 5, dtype=torch.long)}

def plain():
    t = time.perf_counter(); it(TEXT, **kw); return time.perf_counter() - t

plain()  # warm-up

def overhead(block, n):
    s = VoiceSampler(gen, seed=1, block=block)
    s.next()  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        v = s.next()
        with adapter.voice(v.embedding):
            pass
    return (time.perf_counter() - t) / n

s16 = VoiceSampler(gen, seed=3)
s16.take(VOICES)
rejected_share = sum(s16.rejected.values()) / s16.drawn
ov16, ov1 = overhead(16, VOICES), overhead(1, VOICES // 8)
s = VoiceSampler(gen, seed=2)
s.take(8)  # past the first calls, whose block size is still adapting to the rejection rate
def plugged():
    t = time.perf_counter()
    v = s.next()
    with adapter.voice(v.embedding):
        it(TEXT, **kw)
    return time.perf_counter() - t
# interleaved, so that a change of machine load hits both alike
base, e2e = [], []
for _ in range(REPS):
    base.append(plain())
    e2e.append(plugged())
ratios = [b / a for a, b in zip(base, e2e)]
audio_s = len(np.asarray(it(TEXT, **kw)[0] if FAMILY == "v3" else it(TEXT))) / (24000 if FAMILY == "v3" else 48000)
json.dump({"family": FAMILY, "audio_s": audio_s, "synth": statistics.median(base), "synth_runs": base, "overhead16": ov16,
           "overhead1": ov1, "e2e": statistics.median(ratios), "e2e_runs": e2e, "sampler": gen.cfg.sample.sampler,
           "steps": gen.cfg.sample.steps, "threshold": s.threshold, "rejected_share": rejected_share, "rejected": s.rejected, "drawn": s.drawn},
          open(WORK + "/result.json", "w"))
"""


def run(family: str, checkout: Path, work: Path, reps: int, voices: int) -> dict:
    if family == "v3":
        from conftest import build_speechbrain_model_dir

        from toucan_speakemb.adapters.random_toucan import offline_v3_checkout

        ecapa = build_speechbrain_model_dir("ecapa", work / "ecapa")
        checkout = offline_v3_checkout(checkout, work / "toucan", ecapa)
    values = dict(CHECKOUT=str(checkout), FAMILY=family, WORK=str(work), REPS=reps, VOICES=voices, TEXT=TEXT,
                  RECIPE=str(HERE.parent / "recipes" / "default" / "hparams.yaml"))
    code = "".join(f"{k} = {v!r}\n" for k, v in values.items()) + textwrap.dedent(WORKER)
    env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(work))
    if r.returncode != 0:
        sys.exit(f"{family}: the benchmark failed:\n{r.stderr[-3000:]}")
    return json.loads((work / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="syntheses per timing (median)")
    ap.add_argument("--voices", type=int, default=256, help="voices drawn to time the overhead (mean)")
    args = ap.parse_args()
    targets = [(f, os.environ.get(v)) for f, v in (("v2.2", "TOUCAN_V22_DIR"), ("v3", "TOUCAN_V3_DIR"))]
    targets = [(f, Path(d)) for f, d in targets if d]
    if not targets:
        print("no Toucan checkout given: set TOUCAN_V22_DIR (IMS-Toucan v2.2) and/or TOUCAN_V3_DIR (v3.x) to run "
              "this benchmark on the real interfaces; nothing was measured")
        return
    rows = []
    for family, checkout in targets:
        with tempfile.TemporaryDirectory(prefix=f"bench_synth_{family}_") as tmp:
            print(f"[{family}] {checkout}: building random-weight models, interface and generator ...", flush=True)
            rows.append(run(family, checkout, Path(tmp), args.reps, args.voices))
            print(f"[{family}] {json.dumps(rows[-1])}", flush=True)
    print(f"\nshort sentence: {TEXT!r}; CPU, 1 thread; default recipe generator, "
          f"{rows[0]['sampler']} {rows[0]['steps']} steps\n")
    print("| Toucan | audio s | plain synthesis s/utt | candidates rejected | plugin overhead ms/utt (default) | ratio | "
          "overhead ms/utt (block 1) | ratio | end-to-end / plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['family']} | {r['audio_s']:.2f} | {r['synth']:.3f} | {r['rejected_share']:.0%} | {1000 * r['overhead16']:.2f} | {r['overhead16'] / r['synth']:.2%} | "
              f"{1000 * r['overhead1']:.2f} | {r['overhead1'] / r['synth']:.2%} | {r['e2e']:.3f} |")
    for r in rows:
        ok = r["overhead16"] / r["synth"] <= 0.02
        print(f"{r['family']}: overhead {'within' if ok else 'ABOVE'} the 2% target; plain runs (s): "
              f"{', '.join(f'{t:.3f}' for t in r['synth_runs'])}; with the plugin: "
              f"{', '.join(f'{t:.3f}' for t in r['e2e_runs'])}; end-to-end sampler rejected {r['rejected']} "
              f"of {r['drawn']} candidates (threshold {r['threshold']:.3f})")


if __name__ == "__main__":
    main()
