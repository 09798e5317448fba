"""Our preprocessing and embeddings against Toucan's own code at the matching release.

The checkouts come from ``TOUCAN_CHECKOUTS`` (``dir1:dir2:...``, as for tests/adapters/test_toucan_integration.py,
whose docstring says how to build them and what to install). Each checkout's release is recognised from its
files by the release registry (``adapters/releases.py``), and each test runs on every listed checkout of the
release family it needs (skipped, saying so, when none is listed):

- v2.0 to v2.2 (``InferenceFastSpeech2``): the waveform ``ProsodicConditionExtractor`` gives its encoders
  must equal ours sample for sample, and its 704-dim condition must equal our pipeline's row.
- v3.x (``ToucanTTSInterface``): the same for ``ToucanTTSInterface.set_utterance_embedding``.
- v2.3 to v2.b (which the registry names and refuses for synthesis: they condition on Toucan's own style
  embedding): the style embedding its interface computes equals what ``extract --profile toucan-native``
  writes (silence cutting off, as it needs a download).

Each test runs the checkout's code in a separate Python process (Toucan's top-level packages,
``Preprocessing`` etc., differ between releases and must not meet in one interpreter) on the same audio
files, with the same SpeechBrain model folders. The Toucan objects are made with ``__new__`` so their
constructors do not download TTS models; the methods that make the embedding are Toucan's own, unchanged.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile as sf

from conftest import read_audio, speak
from toucan_speakemb.adapters.releases import UNSUPPORTED, release_of_checkout
from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.extract.audio import load_and_preprocess

STYLE = "style embedding"  # v2.3 to v2.b, named by the registry among the releases it does not synthesise with
FAMILIES = {"v2": "v2.0-v2.2", "v3": "v3.x", STYLE: "v2.3-v2.b"}


def listed_checkouts() -> List[str]:
    return [d for d in os.environ.get("TOUCAN_CHECKOUTS", "").split(os.pathsep) if d]


def family_of(checkout: str) -> str:
    """The release family of a checkout, read from its files ("" when it is none of those tested here)."""
    root = Path(checkout)
    try:
        return release_of_checkout(root).family
    except SpeakEmbError:
        return STYLE if any((root / marker).is_file() for marker, _ in UNSUPPORTED) else ""


def checkouts_of(family: str) -> list:
    """One parameter per listed checkout of ``family``; without any, one that skips with the reason."""
    found = [pytest.param(d, id=Path(d).name) for d in listed_checkouts() if family_of(d) == family]
    return found or [pytest.param(None, id=f"no-{FAMILIES[family]}")]


def checkout(listed, family: str) -> Path:
    if listed is None:
        pytest.skip(f"no IMS-Toucan {FAMILIES[family]} checkout in TOUCAN_CHECKOUTS=dir1:dir2:... (see "
                    f"tests/adapters/test_toucan_integration.py for how to build them)")
    return Path(listed)


def test_every_listed_checkout_is_recognised():
    listed = listed_checkouts()
    if not listed:
        pytest.skip("set TOUCAN_CHECKOUTS=dir1:dir2:... to IMS-Toucan checkouts to run")
    unknown = [d for d in listed if not family_of(d)]
    assert not unknown, f"TOUCAN_CHECKOUTS names folders that are no recognised Toucan checkout: {unknown}"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The same speech at the rates and in the layouts Toucan meets: 22.05 kHz (espeak-ng), 44.1 kHz stereo,
    48 kHz flac, 8 kHz ogg, 16 kHz with leading/trailing zeros."""
    root = tmp_path_factory.mktemp("toucan_clips") / "spk"
    base = speak(root / "a22k.wav", "Toucans are tropical birds with very large and colourful bills.")
    wave, sr = read_audio(base)
    files = [base]

    def at(rate):
        n = int(len(wave) * rate / sr)
        return np.interp(np.linspace(0, len(wave) - 1, n), np.arange(len(wave)), wave)

    x = at(44100)
    sf.write(str(root / "b44k_stereo.wav"), np.stack([x, 0.6 * x[::-1]], 1), 44100)
    sf.write(str(root / "c48k.flac"), at(48000), 48000, format="FLAC")
    sf.write(str(root / "d8k.ogg"), at(8000), 8000, format="OGG", subtype="VORBIS")
    sf.write(str(root / "e16k.wav"), np.concatenate([np.zeros(1600), at(16000), np.zeros(800)]), 16000)
    files += [root / "b44k_stereo.wav", root / "c48k.flac", root / "d8k.ogg", root / "e16k.wav"]
    return files


RECORDER = """
import sys, json, tempfile
import numpy as np, soundfile as sf, torch
from toucan_speakemb.core.toucan_checkout import use_checkout
use_checkout(CHECKOUT)  # the project's one rule for a checkout's code
from safetensors.numpy import save_file
from speechbrain.inference.classifiers import EncoderClassifier

def sb(folder):
    return EncoderClassifier.from_hparams(source=folder, savedir=tempfile.mkdtemp(),
                                          overrides={"pretrained_path": folder})

class Recorder:
    '''Hands every call on to the SpeechBrain model and keeps the waveform it was given.'''
    def __init__(self, model):
        self.model, self.waves = model, []
    def encode_batch(self, wavs, *a, **k):
        self.waves.append(wavs.detach().cpu().numpy().reshape(-1).copy())
        return self.model.encode_batch(wavs, *a, **k)
"""


def run_toucan(code: str, checkout_dir: Path, tmp_path: Path, **values) -> dict:
    from safetensors.numpy import load_file

    out = tmp_path / "toucan_out.safetensors"
    header = "".join(f"{k} = {v!r}\n" for k, v in dict(values, CHECKOUT=str(checkout_dir), OUT=str(out)).items())
    script = header + RECORDER + textwrap.dedent(code)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-4000:]
    return load_file(str(out))


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def ours(files, out, run_cli=None, *args, profile="toucan-v2.2", encoder_dirs=None):
    """Our pipeline on a manifest of the files: as a user runs it (``run_cli``) or through the API."""
    m = out.with_suffix(".csv")
    m.write_text("path,speaker,utterance_id\n" + "".join(f"{f},spk,{Path(f).stem}\n" for f in files))
    if run_cli is not None:
        r = run_cli("extract", m, "-o", out, "--no-progress", "--batch-size", "8", *args)
        assert r.returncode == 0, r.stderr[-3000:]
    else:
        from toucan_speakemb.extract.corpora import load_corpus
        from toucan_speakemb.extract.pipeline import ExtractConfig, extract

        extract(load_corpus(m)[1], out, ExtractConfig(profile=profile, encoder_dirs=encoder_dirs, workers=1,
                                                      progress=False, device="cpu"))
    es = EmbeddingSet.load(out)
    by = dict(zip(es.utterance_ids, es.embeddings))
    return [by[Path(f).stem] for f in files], es


@pytest.mark.parametrize("listed", checkouts_of("v2"))
def test_v2_preprocessing_and_embedding_match_toucan_v2(listed, clips, sb_small_root, tmp_path):
    root = checkout(listed, "v2")
    sb_model_dirs = {"ecapa": sb_small_root / "spkrec-ecapa-voxceleb", "xvector": sb_small_root / "spkrec-xvect-voxceleb"}
    got = run_toucan("""
        from Preprocessing.AudioPreprocessor import AudioPreprocessor
        from Preprocessing.ProsodicConditionExtractor import ProsodicConditionExtractor
        ecapa, xvect = Recorder(sb(ECAPA)), sb(XVECT)
        res = {}
        for i, f in enumerate(FILES):
            wave, sr = sf.read(f)
            ext = ProsodicConditionExtractor.__new__(ProsodicConditionExtractor)
            # what its __init__ does, minus the model hub: the same preprocessor, our model folders
            ext.ap = AudioPreprocessor(input_sr=sr, output_sr=16000, melspec_buckets=80, hop_length=256,
                                       n_fft=1024, cut_silence=False)
            ext.speaker_embedding_func_ecapa, ext.speaker_embedding_func_xvector = ecapa, xvect
            res[f"emb{i}"] = ext.extract_condition_from_reference_wave(wave).numpy()
            res[f"wave{i}"] = ecapa.waves[-1]
        save_file(res, OUT)
    """, root, tmp_path, FILES=[str(f) for f in clips], ECAPA=str(sb_model_dirs["ecapa"]),
        XVECT=str(sb_model_dirs["xvector"]))
    for i, f in enumerate(clips):
        mine = load_and_preprocess(f, "toucan-v2.2").numpy()
        assert mine.shape == got[f"wave{i}"].shape, f.name
        assert np.array_equal(mine, got[f"wave{i}"]), f"{f.name}: max diff {np.abs(mine - got[f'wave{i}']).max()}"
    rows, es = ours(clips, tmp_path / "v22.safetensors", encoder_dirs=sb_model_dirs)
    assert es.profile.name == "toucan-v2.2"
    for i, (f, row) in enumerate(zip(clips, rows)):
        theirs = got[f"emb{i}"]
        assert theirs.shape == (704,)
        assert rel(row[:192], theirs[:192]) < 1e-4, f.name  # ECAPA first, deterministic
        assert rel(row[192:], theirs[192:]) < 2e-2, f.name  # x-vector (SpeechBrain adds pooling noise)


@pytest.mark.parametrize("listed", checkouts_of("v3"))
def test_v3_preprocessing_and_embedding_match_toucan_v3(listed, clips, sb_small_root, tmp_path, run_cli):
    root = checkout(listed, "v3")
    sb_model_dirs = {"ecapa": sb_small_root / "spkrec-ecapa-voxceleb"}
    got = run_toucan("""
        from InferenceInterfaces.ToucanTTSInterface import ToucanTTSInterface
        ecapa = Recorder(sb(ECAPA))
        res = {}
        for i, f in enumerate(FILES):
            tts = ToucanTTSInterface.__new__(ToucanTTSInterface)
            torch.nn.Module.__init__(tts)
            tts.device = "cpu"
            tts.speaker_embedding_func_ecapa = ecapa
            tts.set_utterance_embedding(path_to_reference_audio=f)
            res[f"emb{i}"] = tts.default_utterance_embedding.numpy()
            res[f"wave{i}"] = ecapa.waves[-1]
        save_file(res, OUT)
    """, root, tmp_path, FILES=[str(f) for f in clips], ECAPA=str(sb_model_dirs["ecapa"]))
    for i, f in enumerate(clips):
        mine = load_and_preprocess(f, "toucan-v3").numpy()
        assert mine.shape == got[f"wave{i}"].shape, f.name
        assert np.array_equal(mine, got[f"wave{i}"]), f"{f.name}: max diff {np.abs(mine - got[f'wave{i}']).max()}"
    rows, es = ours(clips, tmp_path / "v3.safetensors", run_cli, "--profile", "toucan-v3", "--encoder-dir",
                    f"ecapa={sb_model_dirs['ecapa']}")
    assert es.profile.name == "toucan-v3"
    for i, (f, row) in enumerate(zip(clips, rows)):
        assert got[f"emb{i}"].shape == (192,)
        assert rel(row, got[f"emb{i}"]) < 1e-4, f.name


@pytest.mark.parametrize("listed", checkouts_of(STYLE))
def test_toucan_native_matches_the_checkouts_style_embedding(listed, clips, tmp_path, run_cli):
    root = checkout(listed, STYLE)
    weights = tmp_path / "embedding_function.pt"
    got = run_toucan("""
        from TrainingInterfaces.Spectrogram_to_Embedding.StyleEmbedding import StyleEmbedding
        from Preprocessing.AudioPreprocessor import AudioPreprocessor
        torch.manual_seed(0)
        fn = StyleEmbedding()
        torch.save({"style_emb_func": fn.state_dict()}, WEIGHTS)  # Toucan's own file layout
        fn.eval()
        res = {}
        for i, f in enumerate(FILES):
            # the lines of ToucanTTSInterface.set_utterance_embedding, with cut_silence off
            wave, sr = sf.read(f)
            ap = AudioPreprocessor(input_sr=sr, output_sr=16000, cut_silence=False)
            spec = ap.audio_to_mel_spec_tensor(wave).transpose(0, 1)
            spec_len = torch.LongTensor([len(spec)])
            with torch.inference_mode():
                res[f"emb{i}"] = fn(spec.unsqueeze(0), spec_len.unsqueeze(0)).squeeze().numpy()
        save_file(res, OUT)
    """, root, tmp_path, FILES=[str(f) for f in clips], WEIGHTS=str(weights))
    rows, es = ours(clips, tmp_path / "native.safetensors", run_cli, "--profile", "toucan-native",
                    "--toucan-dir", root, "--toucan-embedding-model", weights, "--no-toucan-vad")
    assert es.profile.name == f"toucan-native-{got['emb0'].shape[0]}"
    for i, (f, row) in enumerate(zip(clips, rows)):
        assert rel(row, got[f"emb{i}"]) < 1e-5, f.name
