"""The adapter, the hook, the batch recipe and `synth` on Toucan's real inference classes, with random weights,
once per Toucan checkout listed in ``TOUCAN_CHECKOUTS`` (``dir1:dir2:...``; skipped, saying so, when unset).

Each test runs in a separate Python process with one checkout on ``sys.path`` (releases share top-level
package names). It builds the release's own TTS and vocoder architectures with random weights, saves them in
the checkpoint layout the interface loads (``toucan_speakemb.adapters.random_toucan``), builds the real
interface from them through ``ToucanModels`` (as `synth` does), and synthesises short utterances with
generated embeddings. Per checkout it proves: the release is recognised the same from the checkout's files
and from the imported class; the embedding reaches the model (the TTS model's ``utterance_embedding``
argument is recorded by a forward pre-hook); different voices give different audio and equal voices equal
audio; the interface's own embedding comes back afterwards; and the same command run twice gives
byte-identical wavs (`synth`, the batch recipe, the hook), and the batch recipe made by 1 worker or by 2
shares gives the same wavs and metadata.

How to build the checkouts from a public clone (generic paths; any folders will do)::

    git clone https://github.com/DigitalPhonetics/IMS-Toucan toucan-src
    for tag in v2.0 v2.1 v2.2 v3.0 v3.1 v3.1.1 v3.1.2; do
        mkdir -p toucan/$tag && git -C toucan-src archive $tag | tar -x -C toucan/$tag
    done
    mkdir -p toucan/head && git -C toucan-src archive origin/HEAD | tar -x -C toucan/head   # newest branch
    apt-get install espeak-ng libportaudio2     # Toucan's text front end; sounddevice needs PortAudio
    pip install librosa phonemizer sounddevice noisereduce pypinyin imageio dotwiz dragonmapper transphone \\
        omegaconf audioseal==0.1.3              # what the interfaces import (audioseal, omegaconf: v3.0;
                                                # v3.0's watermark config does not build with audioseal 0.2)
    TOUCAN_CHECKOUTS=toucan/v2.0:toucan/v2.1:toucan/v2.2:toucan/v3.0:toucan/v3.1:toucan/v3.1.1:toucan/v3.1.2:toucan/head \\
        python -m pytest -q -rs -m toucan_integration tests/adapters/test_toucan_integration.py

(Pin torch when installing so pip does not replace the project's: ``pip install -c <(echo torch==X.Y.Z) ...``.)
Toucan v3.0 needs NumPy 1.x (under NumPy 2 its loudness normalisation returns float64 audio, which its
watermark refuses; the adapter refuses v3.0 there and these tests skip it, saying so). To run v3.0 in an
environment with NumPy 2, put NumPy 1.x (and what needs it: pandas 2.x, pytz, tzdata) in a folder first on
``PYTHONPATH`` for that run::

    pip install --target np1 --no-deps numpy==1.26.4 pandas==2.2.3 pytz tzdata
    PYTHONPATH=np1 TOUCAN_CHECKOUTS=toucan/v3.0 python -m pytest -q -rs -m toucan_integration tests/adapters/test_toucan_integration.py

Nothing is downloaded: each test builds from a view of the checkout (symlinks, ``offline_checkout``) whose
``Models/Embedding`` holds a random-weight SpeechBrain ECAPA folder made by conftest (v3.x's constructor
loads ECAPA from there) and, at v3.0, a random-weight AudioSeal watermark generator where the constructor
loads the released one; ``HF_HUB_OFFLINE=1`` makes any attempt to reach the hub fail the test instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile as sf

from test_toucan_adapter import clustered_set, train_tiny
from toucan_speakemb.adapters.random_toucan import offline_checkout
from toucan_speakemb.adapters.releases import facts_from_file, release_of_checkout, releases


def checkouts() -> List[str]:
    return [d for d in os.environ.get("TOUCAN_CHECKOUTS", "").split(os.pathsep) if d]


pytestmark = [
    pytest.mark.toucan_integration,
    pytest.mark.skipif(not checkouts(), reason="set TOUCAN_CHECKOUTS=dir1:dir2:... to IMS-Toucan checkouts to run "
                                               "(see this module's docstring for how to build them)"),
]
# one run per checkout; without the variable, one placeholder that is skipped
CHECKOUTS = checkouts() or ["<none>"]

SCRIPT = """
import json, sys, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, CHECKOUT)
from toucan_speakemb.adapters import ToucanModels, random_voices, random_toucan
from toucan_speakemb.adapters.batch_voices import BatchConfig, run_batch
from toucan_speakemb.adapters.releases import release_of_interface
from toucan_speakemb.adapters.synthesis import Synthesis
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.novelty import VoiceSampler

tts, voc = random_toucan.build_random(CHECKOUT, WORK + "/models", small=True)
adapter = ToucanModels(CHECKOUT, tts, voc).load()
it = adapter.interface
default = it.default_utterance_embedding.clone()
seen, phones = [], []
it.phone2mel.register_forward_pre_hook(
    lambda m, a, k: seen.append(k["utterance_embedding"].detach().cpu().numpy().copy()), with_kwargs=True)
it.phone2mel.register_forward_pre_hook(  # the text's phone features as the model gets them
    lambda m, a, k: phones.append((a[0] if a else k["text"]).detach().cpu().numpy().copy()), with_kwargs=True)
gen = Generator.load(GENERATOR)
synthesis = Synthesis(adapter, gen)
v1, v2 = VoiceSampler(gen, seed=0).take(2)
waves = {}
for name, v in (("a", v1), ("b", v2), ("a_again", v1)):
    with synthesis.conditioned(v, "Hello world."):
        waves[name], sr = adapter.synthesize("Hello world.")
restored = bool(torch.equal(it.default_utterance_embedding, default))
n_adapter = len(seen)
hook = []
for run in ("1", "2"):  # the same hook block twice: the same voices and the same audio
    with random_voices(it, gen, seed=1) as voices:
        it.read_to_file(["Good morning."], WORK + f"/hook{run}.wav", silent=True)
        it("Good evening.")
    hook.append(voices)
hook_restored = "forward" not in it.__dict__ and bool(torch.equal(it.default_utterance_embedding, default))
# after other texts, the first text again: the same phone features and the same audio as the first time
first_phones = phones[0]
with synthesis.conditioned(v1, "Hello world."):
    waves["a_later"], _ = adapter.synthesize("Hello world.")
later_phones = phones[-1]
sentences = WORK + "/sentences.txt"
open(sentences, "w").write("One sentence.\\nAnother one.\\n")
# the batch recipe twice into two folders: one worker, then two shares (the second one first)
for run, shards in (("1", [None]), ("2", ["2/2", "1/2"])):
    for shard in shards:
        run_batch(BatchConfig(generator=GENERATOR, sentences=sentences, out=WORK + f"/batch{run}", voices=2,
                              utterances_per_voice=2, seed=3, threshold=1.0, device="cpu", shard=shard),
                  adapter=adapter, progress=False)
np.savez(WORK + "/out.npz", seen=np.stack(seen), first_phones=first_phones, later_phones=later_phones, v1=v1.embedding, v2=v2.embedding,
         hook_voices=np.stack([v.embedding for v in hook[0].voices]), **waves)
json.dump({"sr": sr, "restored": restored, "release": adapter.release.name,
           "release_of_class": release_of_interface(it).name, "profile": adapter.profile.name,
           "n_adapter": n_adapter, "records": [h.records for h in hook], "hook_restored": hook_restored},
          open(WORK + "/out.json", "w"))
"""


def run_py(code: str, cwd: Path, **values):
    header = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", header + textwrap.dedent(code)], capture_output=True, text=True,
                       env=env, timeout=1800, cwd=str(cwd))
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def prepared(checkout: str, tmp_path: Path, sb_small_root: Path):
    """An offline view of the checkout, its release, and a tiny generator in the release's space."""
    if not Path(checkout).is_dir():
        pytest.fail(f"TOUCAN_CHECKOUTS names {checkout}, which is not a folder")
    release = release_of_checkout(Path(checkout))
    problem = release.environment_problem()
    if problem:  # refused before any work, with the reason (tested in test_toucan_adapter.py)
        pytest.skip(f"{checkout}: {problem}")
    root = offline_checkout(checkout, tmp_path / "toucan", sb_small_root / "spkrec-ecapa-voxceleb")
    es = clustered_set(release.profile, 30, 2) if release.profile == "toucan-v2.2" else clustered_set(release.profile)
    return root, release, train_tiny(es, tmp_path / "gen")


def same_bytes(*paths: Path) -> bool:
    first = paths[0].read_bytes()
    return all(p.read_bytes() == first for p in paths[1:])


@pytest.mark.parametrize("checkout", CHECKOUTS)
def test_generated_voices_reach_the_real_toucan_model(checkout, tmp_path, sb_small_root):
    root, release, gen = prepared(checkout, tmp_path, sb_small_root)
    run_py(SCRIPT, tmp_path, CHECKOUT=str(root), WORK=str(tmp_path), GENERATOR=str(gen.path))
    out = np.load(tmp_path / "out.npz")
    info = json.loads((tmp_path / "out.json").read_text())
    # the release is the same read from the files and from the imported class
    assert info["release"] == info["release_of_class"] == release.name
    assert info["sr"] == release.sample_rate and info["profile"] == gen.profile.name
    # the model was called with exactly the generated embeddings (a batch axis may be added)
    seen = out["seen"].reshape(len(out["seen"]), -1)
    assert seen.shape[1] == gen.dim
    np.testing.assert_array_equal(seen[0], out["v1"])
    np.testing.assert_array_equal(seen[1], out["v2"])
    np.testing.assert_array_equal(seen[2], out["v1"])
    a, b, again = out["a"], out["b"], out["a_again"]
    assert len(a) > 0 and np.isfinite(a).all()
    assert np.array_equal(a, again), "the same voice saying the same text gave different audio"
    assert len(a) != len(b) or np.abs(a - b).max() > 1e-6, "different voices gave the same audio"
    assert info["restored"] and info["hook_restored"]
    # an utterance does not depend on what the interface said before (v2.x's front end flags its own phone
    # table when a phone is stressed or lengthened; the adapter reads it through copies)
    np.testing.assert_array_equal(out["later_phones"], out["first_phones"])
    assert np.array_equal(out["a_later"], a), "the same voice and text gave other audio after other texts"
    # the hook: a fresh voice per call, the one the model saw, recorded with its synthesis seed
    first, second = info["records"]
    assert [r["call"] for r in first] == ["read_to_file", "forward"]
    assert first[0]["voice_id"] != first[1]["voice_id"]
    n = info["n_adapter"]
    np.testing.assert_array_equal(seen[n], out["hook_voices"][0])
    assert [r["voice_id"] for r in first] == [r["voice_id"] for r in second]
    assert [r["synthesis_seed"] for r in first] == [r["synthesis_seed"] for r in second]
    assert first[0]["toucan"]["release"] == release.name
    data, file_sr = sf.read(tmp_path / "hook1.wav")
    assert file_sr == release.sample_rate and len(data) > 0
    assert same_bytes(tmp_path / "hook1.wav", tmp_path / "hook2.wav"), "the hook: the same block gave other audio"
    # the batch recipe: the same settings, the same wavs and metadata, whether 1 worker or 2 shares made them
    wavs = [sorted((tmp_path / f"batch{run}" / "wavs").rglob("*.wav")) for run in ("1", "2")]
    assert len(wavs[0]) == 4 and [w.name for w in wavs[0]] == [w.name for w in wavs[1]]
    for w1, w2 in zip(*wavs):
        assert same_bytes(w1, w2), "the batch recipe: 1 worker and 2 shares gave other audio"
    assert same_bytes(tmp_path / "batch1" / "metadata.csv", tmp_path / "batch2" / "metadata.csv")
    car = json.loads(wavs[0][0].with_suffix(".json").read_text())
    assert car["toucan"]["release"] == release.name and "synthesis_seed" in car


@pytest.mark.parametrize("checkout", CHECKOUTS)
def test_synth_twice_with_one_seed_gives_byte_identical_wavs(checkout, tmp_path, sb_small_root):
    root, release, gen = prepared(checkout, tmp_path, sb_small_root)
    run_py("""
        import sys
        sys.path.insert(0, CHECKOUT)
        from toucan_speakemb.adapters import random_toucan
        tts, voc = random_toucan.build_random(CHECKOUT, WORK, small=True)
        open(WORK + "/names", "w").write(tts.name + "\\n" + voc.name)
    """, tmp_path, CHECKOUT=str(root), WORK=str(tmp_path / "models"))
    tts, voc = (tmp_path / "models" / "names").read_text().split("\n")
    env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for run in ("a", "b"):
        r = subprocess.run([sys.executable, "-m", "toucan_speakemb.cli", "synth", "Hello there.", "Good bye.",
                            "--random-speaker", "--seed", "2", "--generator", str(gen.path), "--toucan-dir", str(root),
                            "--tts-model", str(tmp_path / "models" / tts), "--vocoder", str(tmp_path / "models" / voc),
                            "-o", str(tmp_path / run / "u.wav"), "--no-progress"],
                           capture_output=True, text=True, env=env, timeout=1800, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr[-4000:]
    cars = [json.loads((tmp_path / "a" / f"u_00{i}.json").read_text()) for i in (1, 2)]
    assert cars[0]["voice_id"] != cars[1]["voice_id"]
    for i, c in enumerate(cars, 1):
        data, file_sr = sf.read(tmp_path / "a" / f"u_00{i}.wav")
        assert file_sr == release.sample_rate == c["sample_rate"] and len(data) > 0
        assert c["toucan"]["release"] == release.name and c["toucan"]["family"] == release.family
        assert c["new"] and c["distinct"] and isinstance(c["synthesis_seed"], int)
        assert same_bytes(tmp_path / "a" / f"u_00{i}.wav", tmp_path / "b" / f"u_00{i}.wav"), \
            f"{release.name}: synth --seed 2 gave other audio on the second run"


@pytest.mark.parametrize("checkout", CHECKOUTS)
def test_the_stand_in_of_the_release_has_the_real_method_signatures(checkout, tmp_path):
    """The unit tests' stand-ins (tests/toucan_standin.py) mirror v2.2 and v3.1.2: at those releases, same
    methods, same signatures. At the other releases the methods the adapter and the hook use are there."""
    import inspect

    import toucan_standin

    if not Path(checkout).is_dir():
        pytest.fail(f"TOUCAN_CHECKOUTS names {checkout}, which is not a folder")
    release = release_of_checkout(Path(checkout))
    methods = ["__init__", "set_utterance_embedding", "set_language", "forward", "read_to_file", "read_aloud"]
    run_py("""
        import inspect, json, sys
        sys.path.insert(0, CHECKOUT)
        cls = getattr(__import__(MODULE, fromlist=[NAME]), NAME)
        json.dump({m: str(inspect.signature(getattr(cls, m))) for m in METHODS if hasattr(cls, m)},
                  open(OUT, "w"))
    """, tmp_path, CHECKOUT=str(checkout), MODULE=release.interface_file[:-3].replace("/", "."),
           NAME=release.interface, METHODS=methods, OUT=str(tmp_path / "sig.json"))
    real = json.loads((tmp_path / "sig.json").read_text())
    assert set(real) == set(methods)
    stand_in = getattr(toucan_standin, release.interface)
    mirrored = [r for r in releases() if r.matches(facts_from_file(Path(toucan_standin.__file__), r.interface))]
    if release in mirrored:
        for m in methods:
            assert str(inspect.signature(getattr(stand_in, m))) == real[m], m
    else:
        assert "text" in real["forward"] and "text_list" in real["read_to_file"]

