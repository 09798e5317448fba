"""``toucan-speakemb demo``: the whole loop on embedded data of known structure, no download needed.

Trains the default recipe on ``builtin:synthetic`` (600 speakers x 8 utterances, 704-dim), samples voices,
and writes the ``evaluate`` report: the voices judged against fresh speakers drawn from the true distribution,
beside more fresh true speakers (what a perfect generator scores) and the baselines; the generator and every
baseline are also read along their novelty knobs (temperature, scale, bandwidth, mixing range).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional


from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.evaluation.report import GeneratedSet, evaluate, write_report
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.core.synthetic import BUILTIN, builtin_population, builtin_set
from toucan_speakemb.core.threads import cpu_threads
from toucan_speakemb.training.trainer import train
from toucan_speakemb.voices.bank import VoiceBank

log = logging.getLogger("toucan_speakemb.demo")

def run_demo(out: Path, steps: Optional[int] = None, n_voices: int = 500, seed: int = 0,
             progress: bool = True) -> Path:
    name = "builtin:synthetic"
    out.mkdir(parents=True, exist_ok=True)
    population = builtin_population(name)
    data = builtin_set(name)
    cfg = TrainConfig()
    cfg.train.steps = steps or cfg.train.steps
    cfg.seed = seed
    # the whole job (training, sampling, the report) on the training's threads, torch's and numpy's: one thread
    # keeps the demo fast beside another job (docs/benchmarks.md, the demo's run time)
    with cpu_threads(cfg.train.threads):
        train(data, out / "run", cfg, progress=progress)
        summary = json.loads((out / "run" / "summary.json").read_text())
        train_s = summary["train_seconds"]  # across resumes

        gen = Generator.load(out / "run")
        t0 = time.perf_counter()
        bank = VoiceBank.from_generator(gen, n_voices, seed)
        sample_s = time.perf_counter() - t0
        bank.save(out / "voices.safetensors")
        bank.save_npy(out / "voices.npy")

        # The held-out real speakers: fresh speakers of the true distribution, recorded like the training ones,
        # never seen in training; and as many more, evaluated like a generator — what a perfect one scores.
        _, _, per, set_seed = BUILTIN[name]
        heldout = population.make_set(2000, per, seed=set_seed + 1000, prefix="fresh")
        fresh_same = population.make_set(n_voices, per, seed=set_seed + 2000, prefix="new").speaker_means().embeddings
        ev = evaluate(heldout, [GeneratedSet("generator (default recipe)", bank.embeddings, bank.profile,
                                             str(out / "voices.safetensors")),
                                GeneratedSet("fresh true speakers (reference)", fresh_same, bank.profile)],
                      data, seed=seed, knob_systems={"generator (default recipe)": gen.temperature_knob(seed)})
        intro = (f"Data: `{name}` — {data.summary()}, a clustered nonlinear speaker population of known structure "
                 f"(`toucan_speakemb/core/synthetic.py`). The default recipe trained {summary['steps']} steps in "
                 f"{train_s:.0f} s (model selection kept the weights of step {summary['selected_step']}; step 0 is "
                 f"the Gaussian fit) and sampled {n_voices} voices in {sample_s:.2f} s ({gen.cfg.sample.sampler}, "
                 f"{gen.cfg.sample.steps} steps). The held-out real speakers are 2000 fresh speakers of the true "
                 f"distribution; the row *fresh true speakers* is {n_voices} more of them, measured like a generator: "
                 f"a good generator reads like it. The generator is also traced across its sampling temperature, like "
                 f"each baseline across its novelty knob: the row *as novel as held-out* is its voices at the "
                 f"temperature where they are as far from the training speakers as the held-out speakers are. Files: "
                 f"`run/` (config, log, checkpoints, loss, generator), "
                 f"`voices.safetensors` (voice bank), `voices.npy`, this report as `report.md`, `report.html` and "
                 f"`metrics.json`.")
        path = write_report(ev, out, run_dir=out / "run", title="toucan-speakemb demo", intro=intro)
        log.info("demo report written to %s", path)
        return path
