"""The Python API in a few lines: train a generator, sample voices, keep them in a voice bank.

    python examples/python_api.py [--data my_set.safetensors]

Without --data it uses the embedded data of known structure, with a short training run.
"""
import argparse

from toucan_speakemb import Generator, TrainConfig, VoiceBank, train

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="builtin:synthetic")
ap.add_argument("--out", default="runs/example")
args = ap.parse_args()

cfg = TrainConfig.from_yaml("recipes/default/hparams.yaml", ["train.steps=500"])
train(args.data, args.out, cfg)                      # resumes if interrupted

generator = Generator.load(args.out)
voices = generator.sample(10, seed=0)                # (10, d) numpy array, same seed -> same voices
bank = VoiceBank.from_generator(generator, 10, seed=0)
bank.save("runs/example_voices.safetensors")
print(voices.shape, bank.ids[:3])

# Attribute control (docs/attribute-control.md): a generator conditioned on gender, sampled with
# classifier-free guidance (here on synthetic speakers of known gender; a LibriSpeech or VCTK set from
# `extract` carries gender itself); and a slider on the unconditional generator.
from toucan_speakemb.core.synthetic import SyntheticPopulation

labelled = SyntheticPopulation(dim=704).make_set(600, 8, seed=1, attributes=True)
cond_cfg = TrainConfig.from_yaml("recipes/default/hparams.yaml", ["train.steps=500", "model.conditions=[gender]"])
train(labelled, args.out + "_gender", cond_cfg)
female = Generator.load(args.out + "_gender").sample(10, seed=0, conditions={"gender": "f"}, guidance=2.0)
higher = generator.sample(10, seed=0, sliders={"pc1": 1.5})   # moved in its noise and decoded: stays on the manifold
print(female.shape, higher.shape)

# Your own embeddings: an interchange .npz (embeddings, speaker_ids[, utterance_ids, gender, age]).
# from toucan_speakemb import EmbeddingSet
# es = EmbeddingSet.load("my_embeddings.npz", profile="toucan-v2.2"); es.save("my_set.safetensors")
