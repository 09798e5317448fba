"""Benchmark: throughput of the batch voice recipe with 1 and 2 workers against a plain Toucan loop over the
same sentences, in the same run, as ratios (targets: 2 workers >= 1.7x one on two cores with one thread each;
the plugin's overhead in the batch <= 2 % of plain Toucan synthesis).

With ``--checkout DIR`` (or the first of ``TOUCAN_CHECKOUTS``): that Toucan release's own TTS model and vocoder
at their default sizes with random weights (speed does not depend on the weights; v2.2 is the release whose
random-weight build speaks a fixed five frames per phone, so every utterance has real length), loaded through
its real inference interface. Without one: the test suite's stand-in Toucan (tests/toucan_standin.py), whose
synthesis is nearly free, so only the plugin's own cost and the scaling of the launcher show.

Every process runs one torch thread on CPU (``device=cpu``), in this order: plain loop, batch with 1 worker
(``make_voices.py``), batch with 2 workers (``torchrun --nproc_per_node 2``), plain loop again (machine load
drifts: the plain figure is the mean of both), then two plain loops at once, each over one 2-worker share's
voices: what the machine itself gives two processes (memory bandwidth and shared cores set that ceiling, not
the plugin). Throughput counts the synthesis phase only (from the first
worker's start to the last worker's end, as the workers record it in ``shares/``); model loading and the
plan are reported apart. The plain loop is ``interface(text)`` and a 16-bit wav written per utterance, with
one model load; the batch does the same per utterance plus the voice injection, seeding, sidecar and
checks. The 1- and 2-worker outputs are compared byte for byte.

    OMP_NUM_THREADS=1 python benchmarks/bench_batch_scale.py --checkout path/to/IMS-Toucan-v2.2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "recipes" / "batch_voices"
sys.path.insert(0, str(HERE.parent / "tests"))  # the stand-in Toucan and the tiny generator of the tests

import toucan_standin as standin  # noqa: E402
from conftest import build_speechbrain_model_dir, clustered_set, train_tiny  # noqa: E402

from toucan_speakemb.adapters.random_toucan import offline_checkout  # noqa: E402
from toucan_speakemb.adapters.releases import release_of_checkout  # noqa: E402

BUILD = """
import sys
sys.path.insert(0, CHECKOUT)
from toucan_speakemb.adapters import random_toucan
tts, voc = random_toucan.build_random(CHECKOUT, WORK + "/models")
print(tts); print(voc)
"""

PLAIN = """
import json, sys, time
import numpy as np, soundfile as sf, torch
torch.set_num_threads(1)
sys.path.insert(0, CHECKOUT)
from toucan_speakemb.adapters import ToucanModels
t0 = time.perf_counter()
it = ToucanModels(CHECKOUT, TTS, VOC).load("cpu").interface
load = time.perf_counter() - t0
jobs = json.load(open(PLAN))["jobs"]
# VOICES: None, or only the utterances of these voice ids (one batch worker's share)
texts = [j["text"] for j in jobs if VOICES is None or j["voice_id"] in VOICES]
def say(text):
    w = it(text)
    w = w[0] if isinstance(w, tuple) else w
    return w.detach().cpu().numpy() if hasattr(w, "detach") else np.asarray(w)
say(texts[0])  # warm-up, as the batch's first utterance is not
t = time.time()
for i, text in enumerate(texts):
    sf.write(OUT + f"/{i:05d}.wav", np.clip(say(text), -1, 1), 24000 if "v3" in FAMILY else 48000, subtype="PCM_16")
dt = time.time() - t
params = {name: sum(p.numel() for p in m.parameters()) for name, m in it.named_children()
          if isinstance(m, torch.nn.Module) and sum(p.numel() for p in m.parameters())}
json.dump({"seconds": dt, "n": len(texts), "load": load, "params": params, "started": t, "ended": t + dt},
          open(OUT + "/result.json", "w"))
"""


def env():
    return dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def py(code: str, cwd: Path, **values) -> str:
    return py_together([values], code, cwd)[0]


def py_together(runs, code: str, cwd: Path) -> list:
    """Run ``code`` once per dict of values in ``runs``, all at the same time; their outputs."""
    procs = [subprocess.Popen([sys.executable, "-c", "".join(f"{k} = {v!r}\n" for k, v in values.items())
                               + textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env(), cwd=str(cwd)) for values in runs]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            sys.exit(f"the benchmark failed:\n{err[-3000:]}")
    return [o for o, _ in outs]


def batch(work: Path, out: Path, args, launcher=()) -> dict:
    cmd = [*launcher, str(RECIPE / "make_voices.py"), "--no-progress", *args, f"out={out}", "device=cpu"]
    t = time.perf_counter()
    r = subprocess.run(cmd if launcher else [sys.executable, *cmd], capture_output=True, text=True, env=env(),
                       cwd=str(work))
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"the batch failed:\n{r.stderr[-3000:]}")
    shares = [json.loads(p.read_text()) for p in sorted((out / "shares").glob("*.json"))]
    n = sum(s["made"] for s in shares)
    window = max(s["ended"] for s in shares) - min(s["started"] for s in shares)
    return {"n": n, "seconds": window, "rate": n / window, "wall": wall, "workers": len(shares),
            "devices": sorted({s["device"] for s in shares})}


def wavs(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "wavs").rglob("*.wav"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", default=None, metavar="DIR",
                    help="an IMS-Toucan checkout (v2.2 recommended); default: the first of $TOUCAN_CHECKOUTS, "
                         "else the stand-in Toucan of the tests")
    ap.add_argument("--voices", type=int, default=4)
    ap.add_argument("--per-voice", type=int, default=6, help="utterances per voice")
    args = ap.parse_args()
    checkout = args.checkout or next((d for d in os.environ.get("TOUCAN_CHECKOUTS", "").split(os.pathsep) if d), None)
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        work = Path(tmp)
        if checkout:
            release = release_of_checkout(Path(checkout))
            profile, family, what = release.profile, release.family, f"Toucan {release.name}, random weights"
            ecapa = build_speechbrain_model_dir("ecapa", work / "ecapa")
            root = offline_checkout(checkout, work / "toucan", ecapa)
            tts, voc = py(BUILD, work, CHECKOUT=str(root), WORK=str(work)).split()
        else:
            profile, family, what = "toucan-v3", "v3", "stand-in Toucan (tests/toucan_standin.py)"
            root = standin.make_checkout(work / "toucan", "v3")
            tts = str(standin.make_checkpoint(work / "ToucanTTS.pt", 192, config=True))
            voc = str(standin.make_vocoder(work / "Vocoder.pt", v22=False))
        print(f"[{what}] generator, models ...", flush=True)
        gen = train_tiny(clustered_set(profile, 30, 2), work / "gen")
        common = [f"generator={gen.path}", f"sentences={RECIPE / 'sentences.txt'}", f"voices={args.voices}",
                  f"utterances_per_voice={args.per_voice}", "seed=0", f"toucan_dir={root}", f"tts_model={tts}",
                  f"vocoder={voc}", "log_every=1000000"]
        subprocess.run([sys.executable, str(RECIPE / "make_voices.py"), "--plan-only", *common,
                        f"out={work / 'plan'}"], check=True, env=env(), cwd=str(work), capture_output=True)
        plain = []
        toucan = dict(CHECKOUT=str(root), TTS=tts, VOC=voc, PLAN=str(work / "plan" / "plan.json"), FAMILY=family)
        for rnd in (1, 2):
            if rnd == 2:
                print("[batch, 1 worker] ...", flush=True)
                one = batch(work, work / "one", common)
                print("[batch, 2 workers under torchrun] ...", flush=True)
                two = batch(work, work / "two", common,
                            (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
            (work / f"plain{rnd}").mkdir()
            print(f"[plain Toucan loop {rnd}] ...", flush=True)
            py(PLAIN, work, VOICES=None, OUT=str(work / f"plain{rnd}"), **toucan)
            plain.append(json.loads((work / f"plain{rnd}" / "result.json").read_text()))
            if rnd == 2:  # what the machine gives two processes at once: two plain loops, the workers' voices each
                print("[two plain Toucan loops at once] ...", flush=True)
                parts = [json.loads(p.read_text())["voices"] for p in sorted((work / "two" / "shares").glob("*.json"))]
                outs = [work / f"plain_part{i}" for i in range(len(parts))]
                for o in outs:
                    o.mkdir()
                py_together([dict(VOICES=part, OUT=str(o), **toucan) for part, o in zip(parts, outs)], PLAIN, work)
                results = [json.loads((o / "result.json").read_text()) for o in outs]
                window = max(r["ended"] for r in results) - min(r["started"] for r in results)
                together = {"n": sum(r["n"] for r in results), "seconds": window}
        same = wavs(work / "one") == wavs(work / "two") and \
            (work / "one" / "metadata.csv").read_bytes() == (work / "two" / "metadata.csv").read_bytes()
        n = plain[0]["n"]
        plain_rate = n / ((plain[0]["seconds"] + plain[1]["seconds"]) / 2)
        print(f"\n{what}; {n} utterances ({args.voices} voices x {args.per_voice}) of recipes/batch_voices/"
              f"sentences.txt; CPU (devices of the workers: {', '.join(one['devices'] + two['devices'])}), "
              f"one torch thread per process, {os.cpu_count()} cores seen (shared with other work: load varies)")
        print(f"model parameters: {plain[0]['params']}\n")
        print("| run | utterances/s | ratio to plain | synthesis s | wall s (with loading, plan) |")
        print("|---|---:|---:|---:|---:|")
        print(f"| plain Toucan loop (mean of 2 runs: {plain[0]['seconds']:.1f} s, {plain[1]['seconds']:.1f} s) | "
              f"{plain_rate:.3f} | 1.000 | {n / plain_rate:.1f} | (model load {plain[0]['load']:.1f} s) |")
        for name, r in (("batch, 1 worker", one), ("batch, 2 workers (torchrun)", two)):
            print(f"| {name} | {r['rate']:.3f} | {r['rate'] / plain_rate:.3f} | {r['seconds']:.1f} | {r['wall']:.1f} |")
        together_rate = together["n"] / together["seconds"]
        print(f"| two plain Toucan loops at once (the 2 workers' voices each) | {together_rate:.3f} | "
              f"{together_rate / plain_rate:.3f} | {together['seconds']:.1f} | |")
        overhead = plain_rate / one["rate"] - 1
        print(f"\n2 workers / 1 worker: {two['rate'] / one['rate']:.2f}x (target >= 1.7x); what the machine gives "
              f"two processes of plain Toucan at once: {together_rate / plain_rate:.2f}x; the batch's 2 workers "
              f"reach {two['rate'] / together_rate:.0%} of it")
        print(f"plugin overhead in the batch (1 worker vs plain, per utterance): {overhead:+.1%} (target <= 2%); "
              f"{1000 * (1 / one['rate'] - 1 / plain_rate):.1f} ms per utterance")
        print(f"1 and 2 workers give identical wavs and metadata.csv: {same}")
        if not same:  # say where and by how much (in 16-bit steps)
            import numpy as np
            import soundfile as sf

            for name in wavs(work / "one"):
                a = sf.read(work / "one" / name, dtype="int16")[0].astype(int)
                b = sf.read(work / "two" / name, dtype="int16")[0].astype(int)
                if len(a) != len(b) or (a != b).any():
                    print(f"  {name}: " + (f"lengths {len(a)} / {len(b)}" if len(a) != len(b) else
                                           f"max {np.abs(a - b).max()} steps, {(a != b).mean():.1%} of samples"))


if __name__ == "__main__":
    main()
