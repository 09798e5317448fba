"""The adapter, the hook and `synth` on Toucan's real inference classes, with random weights.

Each test runs in a separate Python process with one Toucan checkout on ``sys.path`` (releases share
top-level package names). It builds the release's own TTS and vocoder architectures with random weights,
saves them in the checkpoint layout the interface loads (``toucan_speakemb.adapters.random_toucan``), builds
the real interface from them through ``ToucanModels`` (as `synth` does), and synthesises short utterances
with generated embeddings. It asserts that the embedding reached the model (the TTS model's
``utterance_embedding`` argument is recorded by a forward pre-hook), that outputs differ between voices and
are equal for equal voices, and that the interface's own embedding comes back afterwards.

How to run (skipped, saying so, when the variables are unset; CI does not install Toucan):

    git clone https://github.com/DigitalPhonetics/IMS-Toucan path/to/IMS-Toucan
    mkdir -p path/to/t22 path/to/t312
    git -C path/to/IMS-Toucan archive v2.2   | tar -x -C path/to/t22
    git -C path/to/IMS-Toucan archive v3.1.2 | tar -x -C path/to/t312
    apt-get install espeak-ng libportaudio2          # Toucan's text front end; sounddevice needs PortAudio
    .venv/bin/pip install -c <(echo torch==2.13.0) librosa phonemizer sounddevice noisereduce pypinyin \\
        imageio dotwiz dragonmapper transphone       # what the interfaces import at v2.2 and v3.1.2
    TOUCAN_V22_DIR=path/to/t22 TOUCAN_V3_DIR=path/to/t312 .venv/bin/python -m pytest -q -rs tests/test_toucan_integration.py

Nothing is downloaded: v2.2's interface loads only the two model files; v3.x's constructor loads SpeechBrain's
ECAPA encoder from ``Models/Embedding/speechbrain_speaker_embedding_ecapa`` of its working folder, so the test
builds it from a view of the checkout (symlinks) whose ``Models/Embedding`` holds a random-weight ECAPA
folder made by conftest (SpeechBrain uses files already in its save folder), with ``HF_HUB_OFFLINE=1`` so any
attempt to reach the hub would fail the test instead. v3.x's prosody sampling and its inference-time
dropout are random, so each synthesis is preceded by ``torch.manual_seed(0)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_extract_toucan import checkout

SCRIPT = """
import json, sys, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, CHECKOUT)
from toucan_speakemb.adapters import ToucanModels, random_voices
from toucan_speakemb.adapters import random_toucan
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.novelty import VoiceSampler

if FAMILY == "v2.2":
    tts, voc = random_toucan.build_v22(WORK + "/models")
else:
    tts, voc = random_toucan.build_v3(WORK + "/models", small=True)
adapter = ToucanModels(CHECKOUT, tts, voc).load()
it = adapter.interface
default = it.default_utterance_embedding.clone()
seen = []
it.phone2mel.register_forward_pre_hook(
    lambda m, a, k: seen.append(k["utterance_embedding"].detach().cpu().numpy().copy()), with_kwargs=True)
gen = Generator.load(GENERATOR)
adapter.check_generator(gen)
v1, v2 = VoiceSampler(gen, seed=0).take(2)
waves = {}
for name, v in (("a", v1), ("b", v2), ("a_again", v1)):
    torch.manual_seed(0)
    with adapter.voice(v.embedding):
        waves[name], sr = adapter.synthesize("Hello world.")
restored = bool(torch.equal(it.default_utterance_embedding, default))
with random_voices(it, gen, seed=1) as voices:
    it.read_to_file(["Good morning."], WORK + "/hook.wav", silent=True)
    it("Good evening.")
np.savez(WORK + "/out.npz", seen=np.stack(seen), v1=v1.embedding, v2=v2.embedding,
         hook_voices=np.stack([v.embedding for v in voices.voices]), **waves)
json.dump({"sr": sr, "restored": restored, "describe": adapter.describe(), "profile": adapter.profile.name,
           "records": voices.records, "hook_restored": "forward" not in it.__dict__
           and bool(torch.equal(it.default_utterance_embedding, default))}, open(WORK + "/out.json", "w"))
"""


def run_py(code: str, cwd: Path, **values):
    header = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", header + textwrap.dedent(code)], capture_output=True, text=True,
                       env=env, timeout=1200, cwd=str(cwd))
    assert r.returncode == 0, r.stderr[-4000:]


def prepared(family: str, tmp_path: Path, sb_small_root: Path, request):
    # the shared tiny generators (conftest) are asked for after the checkout: no training for a skipped test
    if family == "v2.2":
        root = checkout("TOUCAN_V22_DIR", "v2.2")
        gen = request.getfixturevalue("tiny_generator_v22")
    else:
        from toucan_speakemb.adapters.random_toucan import offline_v3_checkout

        root = offline_v3_checkout(checkout("TOUCAN_V3_DIR", "v3.1.2"), tmp_path / "toucan",
                                   sb_small_root / "spkrec-ecapa-voxceleb")
        gen = request.getfixturevalue("tiny_generator")
    return root, gen


@pytest.mark.parametrize("family,sr,dim", [("v2.2", 48000, 704), ("v3", 24000, 192)])
def test_generated_voices_reach_the_real_toucan_model(family, sr, dim, tmp_path, sb_small_root, request):
    root, gen = prepared(family, tmp_path, sb_small_root, request)
    run_py(SCRIPT, tmp_path, CHECKOUT=str(root), FAMILY=family, WORK=str(tmp_path), GENERATOR=str(gen.path))
    out = np.load(tmp_path / "out.npz")
    info = json.loads((tmp_path / "out.json").read_text())
    assert info["sr"] == sr and info["profile"] == gen.profile.name
    # the model was called with exactly the generated embeddings (a batch axis may be added)
    seen = out["seen"].reshape(len(out["seen"]), -1)
    assert seen.shape[1] == dim
    np.testing.assert_array_equal(seen[0], out["v1"])
    np.testing.assert_array_equal(seen[1], out["v2"])
    np.testing.assert_array_equal(seen[2], out["v1"])
    a, b, again = out["a"], out["b"], out["a_again"]
    assert len(a) > 0 and np.isfinite(a).all()
    assert np.array_equal(a, again), "the same voice gave different audio"
    assert len(a) != len(b) or np.abs(a - b).max() > 1e-6, "different voices gave the same audio"
    assert info["restored"] and info["hook_restored"]
    # the hook: a fresh voice per call, and it is the one the model saw
    assert [r["call"] for r in info["records"]] == ["read_to_file", "forward"]
    assert info["records"][0]["voice_id"] != info["records"][1]["voice_id"]
    np.testing.assert_array_equal(seen[3], out["hook_voices"][0])
    np.testing.assert_array_equal(seen[-1], out["hook_voices"][1])
    data, file_sr = sf.read(tmp_path / "hook.wav")
    assert file_sr == sr and len(data) > 0


@pytest.mark.parametrize("family,sr", [("v2.2", 48000), ("v3", 24000)])
def test_synth_command_on_the_real_toucan_interface(family, sr, tmp_path, sb_small_root, request):
    root, gen = prepared(family, tmp_path, sb_small_root, request)
    run_py("""
        import sys
        sys.path.insert(0, CHECKOUT)
        from toucan_speakemb.adapters import random_toucan
        random_toucan.build_v22(WORK) if FAMILY == "v2.2" else random_toucan.build_v3(WORK, small=True)
    """, tmp_path, CHECKOUT=str(root), FAMILY=family, WORK=str(tmp_path / "models"))
    names = ("FastSpeech2_random.pt", "HiFiGAN_random.pt") if family == "v2.2" else ("ToucanTTS_random.pt",
                                                                                   "Vocoder_random.pt")
    env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "toucan_speakemb.cli", "synth", "Hello there.", "Good bye.",
                        "--random-speaker", "--seed", "2", "--generator", str(gen.path), "--toucan-dir", str(root),
                        "--tts-model", str(tmp_path / "models" / names[0]), "--vocoder",
                        str(tmp_path / "models" / names[1]), "-o", str(tmp_path / "out" / "u.wav"), "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=1200, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-4000:]
    cars = [json.loads((tmp_path / "out" / f"u_00{i}.json").read_text()) for i in (1, 2)]
    assert cars[0]["voice_id"] != cars[1]["voice_id"]
    for i, c in enumerate(cars, 1):
        data, file_sr = sf.read(tmp_path / "out" / f"u_00{i}.wav")
        assert file_sr == sr == c["sample_rate"] and len(data) > 0
        assert c["toucan"]["family"] == family and c["new"] and c["distinct"]


@pytest.mark.parametrize("var,tag,module,name", [
    ("TOUCAN_V22_DIR", "v2.2", "InferenceInterfaces.InferenceFastSpeech2", "InferenceFastSpeech2"),
    ("TOUCAN_V3_DIR", "v3.1.2", "InferenceInterfaces.ToucanTTSInterface", "ToucanTTSInterface")])
def test_the_stand_ins_have_the_real_interfaces_method_signatures(var, tag, module, name, tmp_path):
    """The unit tests' stand-ins (tests/toucan_standin.py) mirror these classes: same methods, same signatures."""
    import inspect

    import toucan_standin

    root = checkout(var, tag)
    stand_in = getattr(toucan_standin, name)
    methods = ["__init__", "set_utterance_embedding", "set_language", "forward", "read_to_file", "read_aloud"]
    run_py("""
        import inspect, json, sys
        sys.path.insert(0, CHECKOUT)
        cls = getattr(__import__(MODULE, fromlist=[NAME]), NAME)
        json.dump({m: str(inspect.signature(getattr(cls, m))) for m in METHODS if hasattr(cls, m)},
                  open(OUT, "w"))
    """, tmp_path, CHECKOUT=str(root), MODULE=module, NAME=name, METHODS=methods, OUT=str(tmp_path / "sig.json"))
    real = json.loads((tmp_path / "sig.json").read_text())
    assert set(real) == set(methods)
    for m in methods:
        assert str(inspect.signature(getattr(stand_in, m))) == real[m], m
