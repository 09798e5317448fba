"""Batch of new voices: a folder of wavs, one new voice per speaker id, metadata.csv and the voice bank.

    python recipes/batch_voices/make_voices.py [--config batch.yaml] [--no-progress] [key=value ...]
    torchrun --nproc_per_node 8 recipes/batch_voices/make_voices.py ...        (one share per rank)
    python recipes/batch_voices/make_voices.py --plan-only ...                  (voices + plan, no audio)
    python recipes/batch_voices/make_voices.py shard=$K/$N ...                  (a job array's task K of N)
    python recipes/batch_voices/make_voices.py --merge out=...                  (metadata.csv of all shards)

e.g. `... voices=100 utterances_per_voice=10 toucan_dir=IMS-Toucan tts_model=ToucanTTS.pt vocoder=Vocoder.pt`.
Kill it at any time and run the same command again: finished files are kept and not redone.
See README.md in this folder.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

from toucan_speakemb.adapters.batch_voices import BatchConfig, merge_batch, plan_batch, run_batch
from toucan_speakemb.core.errors import SpeakEmbError

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--config", default=str(Path(__file__).with_name("batch.yaml")))
    ap.add_argument("--no-progress", action="store_true", help="no bar: one log line per log_every utterances")
    step = ap.add_mutually_exclusive_group()
    step.add_argument("--plan-only", action="store_true", help="write the voice bank and the plan, then stop")
    step.add_argument("--merge", action="store_true",
                      help="only write metadata.csv; refused while any share is unfinished")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        cfg = BatchConfig.from_yaml(args.config, args.overrides)
        if cfg.toucan_dir is None:
            cfg.toucan_dir = os.environ.get("TOUCAN_DIR")
        if args.merge:
            print(f"metadata: {merge_batch(cfg.out)}")
        elif args.plan_only:
            plan = plan_batch(cfg)
            print(f"plan: {len(plan.jobs)} utterances of {len(plan.bank)} voices in {plan.out / 'plan.json'}")
        else:
            meta = run_batch(cfg, progress=not args.no_progress)
            if meta is not None:
                print(f"metadata: {meta}")
    except SpeakEmbError as e:
        sys.exit(f"error: {e}")
