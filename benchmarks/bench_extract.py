"""Benchmark: extraction speed of our pipeline against a naive loop and the forward pass alone.

Makes N utterances of 2-10 s with espeak-ng (and flite, when installed), builds SpeechBrain model folders
with the real ECAPA / x-vector architectures (random weights: speed does not depend on the weights), and
times on the same files, with the same models:

- pipeline: ``toucan_speakemb.extract.pipeline.extract`` (length-bucketed batches, DataLoader workers decoding and
  preprocessing beside the encoder, checkpoint chunks, final file), models already loaded;
- naive: a loop that reads each file, preprocesses it the same way and calls SpeechBrain's ``encode_batch``
  on it alone, once per encoder (what a script around Toucan's own extractor does);
- ceiling: the encoders' forward pass alone on the pipeline's own batches, audio already decoded,
  preprocessed and padded in memory (what the pipeline would reach if loading cost nothing).

Prints utterances/s and the real-time factor (wall time / audio duration) of each, and the ratios against
the naive loop from the same run. Targets: pipeline >= 2x naive, pipeline >= 80% of the ceiling.

    python benchmarks/bench_extract.py                 # 200 utterances, toucan-v2.2, CPU
    python benchmarks/bench_extract.py -n 400 --device cuda --batch-size 32
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the model-folder builder shared with the tests

WORDS = ("the quick brown fox jumps over a lazy dog while seven bright birds sing softly near the old stone "
         "bridge and every morning a gentle wind carries the sound of distant bells across quiet green "
         "fields where children play and farmers talk about rain weather markets and the coming harvest").split()


def make_corpus(root: Path, n: int, seed: int = 0) -> Path:
    """n utterances of 2-10 s (espeak-ng, some flite), 10 speakers = sub-folders; reused when present."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    have = sorted(root.rglob("*.wav"))
    if len(have) >= n:
        return root
    rng = random.Random(seed)
    voices = ["en+m1", "en+f3", "en+m3", "en+f2", "en-us+m2", "en-us+f4", "en+m4", "en+f4"]
    flite = shutil.which("flite") is not None
    made = 0
    while made < n:
        spk = made % 10
        target = rng.uniform(2.0, 10.0)
        words = max(4, int(target * 2.6))
        text = " ".join(rng.choice(WORDS) for _ in range(words)) + "."
        path = root / f"spk{spk}" / f"utt{made:04d}.wav"
        path.parent.mkdir(exist_ok=True)
        if flite and spk >= 8:
            subprocess.run(["flite", "-voice", "slt" if spk == 8 else "kal", "-t", text, "-o", str(path)],
                           check=True, capture_output=True)
        else:
            subprocess.run(["espeak-ng", "-v", voices[spk % len(voices)], "-s", str(rng.randint(150, 190)),
                            "-w", str(path), text], check=True, capture_output=True)
        secs = sf.info(str(path)).duration
        if not 2.0 <= secs <= 10.0:
            path.unlink()
            continue
        made += 1
    return root


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="utterances (default 200)")
    ap.add_argument("--profile", default="toucan-v2.2", choices=["toucan-v2.2", "toucan-v3"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the pipeline's (32 GPU, 1 CPU)")
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: cores - 1)")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "speakemb_bench",
                    help="where the speech and the model folders are made (reused)")
    args = ap.parse_args()

    import torch

    from conftest import build_speechbrain_model_dir
    from toucan_speakemb.extract.audio import load_and_preprocess
    from toucan_speakemb.extract.corpora import load_corpus
    from toucan_speakemb.extract.encoders import load_encoder
    from toucan_speakemb.extract.pipeline import ExtractConfig, extract, plan_batches

    corpus = make_corpus(args.data / "speech", args.n)
    utts = load_corpus(corpus)[1][: args.n]
    models = args.data / "models"
    dirs = {}
    for comp, sub in (("ecapa", "spkrec-ecapa-voxceleb"), ("xvector", "spkrec-xvect-voxceleb")):
        if not (models / sub / "embedding_model.ckpt").exists():
            build_speechbrain_model_dir(comp, models / sub, seed=7, out_neurons=7205)
        dirs[comp] = models / sub
    if args.profile == "toucan-v3":
        dirs.pop("xvector")
    enc = load_encoder(args.profile, dirs, args.device)
    import soundfile as sf

    audio = sum(sf.info(u.path).duration for u in utts)
    print(f"{len(utts)} utterances, {audio / 60:.1f} min of audio, profile {args.profile}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, batch size {args.batch_size or 'default'}", flush=True)

    # warm-up (first calls allocate; not part of any timing)
    w = load_and_preprocess(utts[0].path, args.profile)
    enc.encode(w.unsqueeze(0), torch.tensor([len(w)]))

    from toucan_speakemb.extract.pipeline import _CpuThreads, _resolve_workers

    default_threads = torch.get_num_threads()
    pipe_threads = _CpuThreads(_resolve_workers(ExtractConfig(workers=args.workers)), enc.device).n or default_threads
    rows = []  # (name, threads, seconds)

    def naive(threads):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        with torch.inference_mode():
            for u in utts:
                wave = load_and_preprocess(u.path, args.profile)
                parts = [e.model.encode_batch(wave.unsqueeze(0).to(enc.device)).squeeze().cpu()
                         for e in enc.encoders]
                torch.cat(parts)
        torch.set_num_threads(default_threads)
        return time.perf_counter() - t

    # ---- naive loop ------------------------------------------------------------------------------------
    rows.append(("naive loop (encode_batch per file)", default_threads, naive(default_threads)))
    print(f"naive done in {rows[-1][2]:.1f} s", flush=True)
    if pipe_threads != default_threads:
        rows.append(("naive loop, pipeline's thread count", pipe_threads, naive(pipe_threads)))
        print(f"naive ({pipe_threads} threads) done in {rows[-1][2]:.1f} s", flush=True)

    # ---- our pipeline ----------------------------------------------------------------------------------
    out_dir = Path(tempfile.mkdtemp(prefix="bench_out_"))
    cfg = ExtractConfig(profile=args.profile, batch_size=args.batch_size, workers=args.workers, progress=False,
                        device=args.device)
    t = time.perf_counter()
    res = extract(utts, out_dir / "emb.safetensors", cfg, encoder=enc)
    rows.append(("pipeline (toucan-speakemb extract)", pipe_threads, time.perf_counter() - t))
    assert res.n_embedded == len(utts), res.summary()
    shutil.rmtree(out_dir, ignore_errors=True)
    print(f"pipeline done in {rows[-1][2]:.1f} s", flush=True)

    # ---- forward pass alone on the pipeline's batches ----------------------------------------------------
    waves = [load_and_preprocess(u.path, args.profile) for u in utts]
    from toucan_speakemb.extract.pipeline import default_batch_size

    bs = args.batch_size or default_batch_size(enc.device)
    batches = plan_batches([len(x) / 16000 for x in waves], bs, cfg.max_batch_seconds)
    padded = []
    for b in batches:
        xs = [waves[j] for j in b]
        padded.append((torch.nn.utils.rnn.pad_sequence(xs, batch_first=True), torch.tensor([len(x) for x in xs])))
    for threads in sorted({pipe_threads, default_threads}):
        torch.set_num_threads(threads)
        t = time.perf_counter()
        for feats, lens in padded:
            enc.encode(feats, lens)
        rows.append(("ceiling (forward alone, same batches)", threads, time.perf_counter() - t))
    torch.set_num_threads(default_threads)

    naive_s = rows[0][2]
    pipe_s = next(r[2] for r in rows if r[0].startswith("pipeline"))
    ceil_same = next(r[2] for r in rows if r[0].startswith("ceiling") and r[1] == pipe_threads)
    ceil_best = min(r[2] for r in rows if r[0].startswith("ceiling"))
    print()
    print(f"| {'mode':<40} | {'threads':>7} | {'utt/s':>7} | {'RTF':>7} | {'vs naive':>8} |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    for name, threads, secs in rows:
        print(f"| {name:<40} | {threads:>7} | {len(utts) / secs:7.2f} | {secs / audio:7.4f} | {naive_s / secs:7.2f}x |")
    print()
    print(f"pipeline vs naive loop: {naive_s / pipe_s:.2f}x (target >= 2x)")
    if pipe_threads != default_threads:
        naive_same = rows[1][2]
        print(f"pipeline vs naive loop at the pipeline's thread count: {naive_same / pipe_s:.2f}x")
    print(f"pipeline vs ceiling at its thread count: {ceil_same / pipe_s * 100:.0f}% (target >= 80%); "
          f"vs the fastest ceiling: {ceil_best / pipe_s * 100:.0f}%")


if __name__ == "__main__":
    main()
