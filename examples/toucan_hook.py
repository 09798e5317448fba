"""Your own Toucan inference script, with a fresh voice for every utterance: the hook is the `with` block.

    cd IMS-Toucan      # a v3.x checkout (or v2.2: use InferenceFastSpeech2 below)
    python /path/to/toucan-speakemb/examples/toucan_hook.py --generator runs/v3 \\
        --tts-model ToucanTTS.pt --vocoder Vocoder.pt

The generator must be trained on embeddings of the model's space (`toucan-speakemb extract --profile
toucan-v3` for v3.x, the default toucan-v2.2 for v2.2); a mismatch is refused before anything is said.
Every `read_to_file` / `forward` call inside the block gets its own voice — new (no training speaker is
within the same-speaker threshold) and distinct (no other voice of the block is) — and `voices.json`
records which voice id and seed went into which file.
"""

import argparse
import sys

sys.path.insert(0, ".")  # the Toucan checkout you run this from

from toucan_speakemb.adapters import random_voices  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--generator", required=True, help="run folder of `toucan-speakemb train`")
ap.add_argument("--tts-model", default=None, help="Toucan TTS checkpoint (default: Toucan's own)")
ap.add_argument("--vocoder", default=None, help="vocoder checkpoint (default: Toucan's own)")
ap.add_argument("--seed", type=int, default=None, help="same seed, same voices (default: fresh)")
args = ap.parse_args()

# --- your usual Toucan code (v3.x) -----------------------------------------------------------------------
from InferenceInterfaces.ToucanTTSInterface import ToucanTTSInterface  # noqa: E402

tts = ToucanTTSInterface(device="cpu", tts_model_path=args.tts_model, vocoder_model_path=args.vocoder)
# v2.2: from InferenceInterfaces.InferenceFastSpeech2 import InferenceFastSpeech2; tts = InferenceFastSpeech2()

# --- the hook: three lines ----------------------------------------------------------------------------------
with random_voices(tts, args.generator, seed=args.seed) as voices:
    for i, sentence in enumerate(["Good morning.", "The weather is fine today.", "See you tomorrow."]):
        tts.read_to_file([sentence], f"utterance_{i}.wav")
voices.save("voices.json")

for r in voices.records:
    print(f"{r['file']}: voice {r['voice_id']} (nearest training speaker cos {r['nearest_training_cosine']:.3f} "
          f"<= threshold {r['threshold']:.3f}, {r['threshold_rule']})")
