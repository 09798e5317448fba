"""Batch of new voices: a folder of wavs, one new voice per speaker id, metadata.csv and the voice bank.

    python recipes/batch_voices/make_voices.py [--config batch.yaml] [--no-progress] [key=value ...]

e.g. `... voices=100 utterances_per_voice=10 toucan_dir=IMS-Toucan tts_model=ToucanTTS.pt vocoder=Vocoder.pt`.
Kill it at any time and run the same command again: finished files are kept and not redone.
See README.md in this folder.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

from toucan_speakemb.adapters.batch_voices import BatchConfig, run_batch
from toucan_speakemb.core.errors import SpeakEmbError

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).with_name("batch.yaml")))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = BatchConfig.from_yaml(args.config, args.overrides)
        if cfg.toucan_dir is None:
            cfg.toucan_dir = os.environ.get("TOUCAN_DIR")
        print(f"metadata: {run_batch(cfg, progress=not args.no_progress)}")
    except SpeakEmbError as e:
        sys.exit(f"error: {e}")
