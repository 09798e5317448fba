"""Benchmark: the plugin's per-utterance overhead over plain Toucan synthesis, as a ratio (target <= 2%).

For each Toucan checkout given (``--checkout DIR``, repeatable, or ``TOUCAN_CHECKOUTS=dir1:dir2:...``; the
release is recognised from the checkout's source), in a separate process (one checkout per process), with one
torch thread, on CPU:

- builds the release's own TTS and vocoder architectures at their default sizes with random weights, saved
  in the checkpoint layout its interface loads (speed does not depend on the weights), and the real
  inference interface from them (``ToucanModels``, as `synth` does; no Stand-in);
- trains the default recipe on the built-in population of known structure at the model's width (labelled
  with the model's profile): with its stored utterance-level threshold most candidates are rejected, as
  with real data, so the cost of rejection is in the figures;
- baseline: plain synthesis of a short sentence, ``interface(text)``, median of a few runs (five frames per
  phone, about 2.4 s of audio: v2.2's random duration predictor is set to it, v3.x is given the durations);
- plugin: per utterance, a fresh voice with the default fast sampler (DDIM, the recipe's steps), its
  novelty and distinctness checks, injection into the interface with Toucan's randomness seeded (the one
  synthesis path's `Synthesis.conditioned`) and restoring afterwards — timed over many
  utterances without synthesis (mean), both with the sampler's prefetching (at least 16 candidates per
  generator call, more when most are rejected: the default) and with a minimum of one per call;
- end to end: the same sentence with the plugin, each run paired with a plain one (interleaved), median
  of the ratios; the sampler is past its first calls (their block size is still adapting);
- noise_reduce (releases whose interface has it, v2.1 and v2.2): the interface's noise reduction switched on
  as its constructor does; plain synthesis with it on, the cost of one voice's noise profile (Toucan's
  ``update_noise_profile``, which the adapter runs once per voice and then keeps), and the plugin's
  per-utterance overhead for a voice whose profile is kept (voice reused: the batch recipe, ``--same-voice``,
  ``--voice``). The hook, which gives every call a new voice, refuses ``noise_reduce``.

    python benchmarks/bench_synth_overhead.py --checkout path/to/IMS-Toucan-v2.2 --checkout path/to/IMS-Toucan-v3.1.2

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

from conftest import build_speechbrain_model_dir  # noqa: E402

from toucan_speakemb.adapters.random_toucan import offline_checkout  # noqa: E402

TEXT = "Hello, this is a short sentence."

WORKER = """
import json, statistics, sys, time
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, CHECKOUT)
from toucan_speakemb import EmbeddingSet, get_profile
from toucan_speakemb.adapters import ToucanModels, random_toucan
from toucan_speakemb.adapters.synthesis import Synthesis
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.novelty import VoiceSampler
from toucan_speakemb.core.synthetic import SyntheticPopulation
from toucan_speakemb.training.trainer import train

tts, voc = random_toucan.build_random(CHECKOUT, WORK + "/models")
adapter = ToucanModels(CHECKOUT, tts, voc).load("cpu")  # the overhead on the CPU, as documented
it = adapter.interface
FAMILY, SR = adapter.release.family, adapter.release.sample_rate

p = adapter.profile
# the built-in population of known structure at the model's width (overlapping speaker clusters): with its
# utterance-level threshold most candidates are rejected, as with real data, so rejection is part of the cost
synth = SyntheticPopulation(dim=p.dim).make_set(600, 8, seed=1)
es = EmbeddingSet(synth.embeddings, synth.speaker_ids, p)
cfg = TrainConfig.from_yaml(RECIPE, ["train.threads=1", "train.device=cpu"])
train(es, WORK + "/gen", cfg, progress=False)
gen = Generator.load(WORK + "/gen", "cpu")
synthesis = Synthesis(adapter, gen)  # the one synthesis path: the voice injected, Toucan's randomness seeded

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
        with synthesis.conditioned(v, TEXT):
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
    with synthesis.conditioned(v, TEXT):
        it(TEXT, **kw)
    return time.perf_counter() - t
# interleaved, so that a change of machine load hits both alike
base, e2e = [], []
for _ in range(REPS):
    base.append(plain())
    e2e.append(plugged())
ratios = [b / a for a, b in zip(base, e2e)]
audio_s = len(adapter.synthesize(TEXT, **kw)[0]) / SR

noise = {}
if hasattr(it, "update_noise_profile"):  # what the constructor does with noise_reduce=True
    it.noise_reduce = True
    it.update_noise_profile()
    plain()  # warm-up
    profile_runs = []
    for _ in range(max(2, REPS // 2)):
        t = time.perf_counter(); it.update_noise_profile(); profile_runs.append(time.perf_counter() - t)
    base_nr = [plain() for _ in range(REPS)]
    kept = VoiceSampler(gen, seed=4).take(8)
    for v in kept:  # each voice's profile made once, then kept by the adapter
        with synthesis.conditioned(v, TEXT):
            pass
    t = time.perf_counter()
    for i in range(VOICES):
        with synthesis.conditioned(kept[i % len(kept)], TEXT):
            pass
    noise = {"synth_nr": statistics.median(base_nr), "profile": statistics.median(profile_runs),
             "overhead_kept": (time.perf_counter() - t) / VOICES, "profile_runs": profile_runs}
    it.noise_reduce = False
json.dump({"release": adapter.release.name, "family": FAMILY, "noise": noise, "audio_s": audio_s, "synth": statistics.median(base), "synth_runs": base, "overhead16": ov16,
           "overhead1": ov1, "e2e": statistics.median(ratios), "e2e_runs": e2e, "sampler": gen.cfg.sample.sampler,
           "steps": gen.cfg.sample.steps, "threshold": s.threshold, "rejected_share": rejected_share, "rejected": s.rejected, "drawn": s.drawn},
          open(WORK + "/result.json", "w"))
"""


def run(checkout: Path, work: Path, reps: int, voices: int) -> dict:
    ecapa = build_speechbrain_model_dir("ecapa", work / "ecapa")
    checkout = offline_checkout(checkout, work / "toucan", ecapa)
    values = dict(CHECKOUT=str(checkout), WORK=str(work), REPS=reps, VOICES=voices, TEXT=TEXT,
                  RECIPE=str(HERE.parent / "recipes" / "default" / "hparams.yaml"))
    code = "".join(f"{k} = {v!r}\n" for k, v in values.items()) + textwrap.dedent(WORKER)
    env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(work))
    if r.returncode != 0:
        sys.exit(f"{checkout}: the benchmark failed:\n{r.stderr[-3000:]}")
    return json.loads((work / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="syntheses per timing (median)")
    ap.add_argument("--voices", type=int, default=256, help="voices drawn to time the overhead (mean)")
    ap.add_argument("--checkout", action="append", default=[], metavar="DIR",
                    help="an IMS-Toucan checkout (repeatable); default: $TOUCAN_CHECKOUTS (dir1:dir2:...)")
    args = ap.parse_args()
    targets = [Path(d) for d in (args.checkout or os.environ.get("TOUCAN_CHECKOUTS", "").split(os.pathsep)) if d]
    if not targets:
        print("no Toucan checkout given: pass --checkout DIR (or set TOUCAN_CHECKOUTS=dir1:dir2:...) to run this "
              "benchmark on the real interfaces; nothing was measured")
        return
    rows = []
    for checkout in targets:
        with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
            print(f"[{checkout}] building random-weight models, interface and generator ...", flush=True)
            rows.append(run(checkout, Path(tmp), args.reps, args.voices))
            print(f"[{rows[-1]['release']}] {json.dumps(rows[-1])}", flush=True)
    print(f"\nshort sentence: {TEXT!r}; CPU, 1 thread; default recipe generator, "
          f"{rows[0]['sampler']} {rows[0]['steps']} steps\n")
    print("| Toucan | audio s | plain synthesis s/utt | candidates rejected | plugin overhead ms/utt (default) | ratio | "
          "overhead ms/utt (block 1) | ratio | end-to-end / plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['release']} | {r['audio_s']:.2f} | {r['synth']:.3f} | {r['rejected_share']:.0%} | {1000 * r['overhead16']:.2f} | {r['overhead16'] / r['synth']:.2%} | "
              f"{1000 * r['overhead1']:.2f} | {r['overhead1'] / r['synth']:.2%} | {r['e2e']:.3f} |")
    for r in rows:
        ok = r["overhead16"] / r["synth"] <= 0.02
        print(f"{r['release']}: overhead {'within' if ok else 'ABOVE'} the 2% target; plain runs (s): "
              f"{', '.join(f'{t:.3f}' for t in r['synth_runs'])}; with the plugin: "
              f"{', '.join(f'{t:.3f}' for t in r['e2e_runs'])}; end-to-end sampler rejected {r['rejected']} "
              f"of {r['drawn']} candidates (threshold {r['threshold']:.3f})")

    noisy = [r for r in rows if r["noise"]]
    if noisy:
        print("\nwith noise_reduce on (v2.1/v2.2):\n")
        print("| Toucan | plain synthesis s/utt | one voice's noise profile s | profile / synthesis | "
              "plugin overhead ms/utt, profile kept | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in noisy:
            n = r["noise"]
            print(f"| {r['release']} | {n['synth_nr']:.3f} | {n['profile']:.3f} | {n['profile'] / n['synth_nr']:.2f}x | "
                  f"{1000 * n['overhead_kept']:.2f} | {n['overhead_kept'] / n['synth_nr']:.2%} |")
        print("A new voice costs one noise profile (Toucan itself pays it on every set_utterance_embedding); "
              "the adapter makes it once per voice, so a voice's later utterances cost only the overhead above. "
              "The hook, which gives every call a new voice, refuses noise_reduce.")


if __name__ == "__main__":
    main()
