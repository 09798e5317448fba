"""SpeechBrain encoders: loading local model folders through SpeechBrain's own loader, offline, and padded
batches that give each utterance the embedding it gets alone."""

import os
import subprocess
import sys
import textwrap

import pytest
import numpy as np
import torch

from conftest import SENTENCES, assert_one_error_line, build_speechbrain_model_dir, speak
from toucan_speakemb.extract.audio import load_and_preprocess
from toucan_speakemb.extract.encoders import ProfileEncoder, SpeechBrainEncoder, load_encoder, parse_encoder_dirs
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.profiles import get_profile


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoders(sb_model_dirs):
    return {k: SpeechBrainEncoder(k, str(d), True) for k, d in sb_model_dirs.items()}


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    """Preprocessed speech of varied lengths, two of them within one STFT hop of each other."""
    root = tmp_path_factory.mktemp("w")
    out = []
    for i, text in enumerate(SENTENCES[:3]):
        out.append(load_and_preprocess(speak(root / f"{i}.wav", text, speed=150 + 20 * i), "toucan-v2.2"))
    out.append(out[0][:-37].clone())  # same frame count as out[0] or one less: the tightest case
    out.append(out[1][: 16000].clone())  # much shorter than the rest
    return out


def test_local_folder_loads_through_speechbrain_offline(sb_model_dirs, encoders, monkeypatch):
    for comp, width in (("ecapa", 192), ("xvector", 512)):
        enc = encoders[comp]
        assert enc.dim == width and enc.local
        # the weights in memory are the ones in the folder (SpeechBrain's loader ran; nothing random)
        ckpt = torch.load(sb_model_dirs[comp] / "embedding_model.ckpt", map_location="cpu", weights_only=True)
        state = enc.model.mods.embedding_model.state_dict()
        for k, v in ckpt.items():
            assert torch.equal(state[k], v), k
        stats = torch.load(sb_model_dirs[comp] / "mean_var_norm_emb.ckpt", map_location="cpu", weights_only=True)
        assert torch.equal(enc.model.hparams.mean_var_norm_emb.glob_mean, stats["glob_mean"])
    # the folder's hyperparams.yaml still names the hub, as a copied hub folder does
    assert "pretrained_path: speechbrain/" in (sb_model_dirs["ecapa"] / "hyperparams.yaml").read_text()


def test_loading_a_folder_never_touches_the_network(sb_small_root, tmp_path):
    sb_model_dirs = {"ecapa": sb_small_root / "spkrec-ecapa-voxceleb", "xvector": sb_small_root / "spkrec-xvect-voxceleb"}
    code = textwrap.dedent(f"""
        import socket
        def refuse(*a, **k):
            raise RuntimeError("network used")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from toucan_speakemb.extract.encoders import load_encoder
        enc = load_encoder("toucan-v2.2", {{"ecapa": r"{sb_model_dirs['ecapa']}", "xvector": r"{sb_model_dirs['xvector']}"}})
        print("DIM", enc.dim)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="0", TOUCAN_SPEAKEMB_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DIM 704" in r.stdout


@pytest.mark.parametrize("comp", ["ecapa", "xvector"])
def test_padded_batch_equals_one_by_one(encoders, waves, comp):
    enc = encoders[comp]
    torch.manual_seed(0)
    single = torch.cat([enc.encode(w.unsqueeze(0), torch.tensor([len(w)])) for w in waves])
    if comp == "xvector":
        again = torch.cat([enc.encode(w.unsqueeze(0), torch.tensor([len(w)])) for w in waves])
    else:
        again = single
    T = max(len(w) for w in waves)
    batch = torch.zeros(len(waves), T)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    lens = torch.tensor([len(w) for w in waves])
    batched = enc.encode(batch, lens)

    def rel(a, b):
        return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())

    # SpeechBrain's x-vector pooling adds a little noise to its statistics, drawn the same way on every call
    # (encoders._seed_pooling_noise), so two one-by-one runs are equal; batched must be as close to
    # one-by-one as one-by-one is to itself, or within float rounding.
    noise = rel(again, single)
    assert noise == 0
    assert rel(batched, single) <= max(3 * noise, 1e-5), (rel(batched, single), noise)
    assert enc.batch_exact
    # what makes this necessary: SpeechBrain's encode_batch with plain relative lengths is not exact
    plain = enc.model.encode_batch(batch, lens.float() / T).reshape(len(waves), -1)
    assert rel(plain, single) > 10 * max(noise, 1e-5)


def test_wrong_model_for_the_profile_is_named(sb_model_dirs):
    with pytest.raises(SpeakEmbError, match="512-dim.*needs 192"):
        load_encoder("toucan-v3", {"ecapa": sb_model_dirs["xvector"]})


def test_incomplete_folder_is_refused(tmp_path):
    d = build_speechbrain_model_dir("ecapa", tmp_path / "m", small=True)
    (d / "embedding_model.ckpt").unlink()
    with pytest.raises(SpeakEmbError, match="not a SpeechBrain model folder.*embedding_model.ckpt"):
        SpeechBrainEncoder("ecapa", str(d), True)
    with pytest.raises(SpeakEmbError, match="not found"):
        SpeechBrainEncoder("ecapa", str(tmp_path / "nope"), True)


def test_encoder_dir_forms(sb_models_root, sb_model_dirs):
    v22, v3 = get_profile("toucan-v2.2"), get_profile("toucan-v3")
    both = {"ecapa": sb_model_dirs["ecapa"], "xvector": sb_model_dirs["xvector"]}
    assert parse_encoder_dirs([str(sb_models_root)], v22) == both
    assert parse_encoder_dirs([f"ecapa={both['ecapa']}", f"xvector={both['xvector']}"], v22) == both
    assert parse_encoder_dirs([str(both["ecapa"])], v3) == {"ecapa": both["ecapa"]}
    assert parse_encoder_dirs([str(sb_models_root)], v3) == {"ecapa": both["ecapa"]}
    with pytest.raises(SpeakEmbError, match="needs ecapa \\+ xvector"):
        parse_encoder_dirs([str(both["ecapa"])], v22)
    with pytest.raises(SpeakEmbError, match="no local folder for the xvector"):
        parse_encoder_dirs([f"ecapa={both['ecapa']}"], v22)
    with pytest.raises(SpeakEmbError, match="has no 'xvector' encoder"):
        parse_encoder_dirs([f"xvector={both['xvector']}"], v3)
    with pytest.raises(SpeakEmbError, match="holds no SpeechBrain model folder"):
        parse_encoder_dirs([str(sb_models_root.parent)], v3)


def test_hub_model_without_internet_fails_with_one_clear_line(tmp_path, run_cli, speech_folder):
    r = run_cli("extract", speech_folder, "-o", tmp_path / "x.safetensors", "--profile", "toucan-v3",
                "--no-progress", env={"HF_HUB_OFFLINE": "1", "TOUCAN_SPEAKEMB_CACHE": str(tmp_path / "c")})
    assert_one_error_line(r, "speechbrain/spkrec-ecapa-voxceleb", "--encoder-dir")


def test_a_new_profile_is_one_registry_entry(sb_model_dirs, monkeypatch):
    # A profile made of known SpeechBrain encoders needs nothing but its entry: `extract --profile` offers it,
    # the encoders load from its components and the audio is preprocessed by its recipe.
    from toucan_speakemb.core import profiles
    from toucan_speakemb.extract.audio import preprocess

    entry = profiles.Profile("xvector-only-512", 512, "x-vector alone", (("xvector", 512),),
                             extractor="speechbrain", preprocessing="toucan-v2.2")
    monkeypatch.setitem(profiles.KNOWN_PROFILES, entry.name, entry)
    assert entry.name in profiles.extractable_profiles()
    enc = load_encoder(entry.name, {"xvector": sb_model_dirs["xvector"]})
    assert enc.dim == 512 and [e.component for e in enc.encoders] == ["xvector"]
    wave = np.sin(np.linspace(0, 2000, 24000)) * 0.3
    assert preprocess(wave, 24000, entry.name).shape[0] > 0
    with pytest.raises(SpeakEmbError, match="not made from SpeechBrain encoders"):
        ProfileEncoder("toucan-native-64")
