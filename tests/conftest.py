"""Shared test fixtures and helpers: real speech made with espeak-ng / flite, SpeechBrain model folders, one
tiny generator for the whole test run (with its run folder and its training set), and the checks of "one clear
error line".

The model folders are in SpeechBrain's own on-disk format (``hyperparams.yaml`` + ``embedding_model.ckpt`` +
``mean_var_norm_emb.ckpt`` + ``classifier.ckpt`` + ``label_encoder.txt``), with the hyperparameters of the
published ``spkrec-ecapa-voxceleb`` / ``spkrec-xvect-voxceleb`` models (including their ``pretrained_path``
pointing at the model hub, as a downloaded copy of those folders has it) and random weights written by
SpeechBrain's own savers. Random weights give embeddings of the right shape and code path, nothing more:
no test treats them as speaker-discriminative.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toucan_speakemb import EmbeddingSet, get_profile
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.training.trainer import train

# The part both published hparams files have in common (normalisation, modules, label encoder, pretrainer).
_SHARED_TAIL = """\
mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""

ECAPA_HPARAMS = """\
# ############################################################################
# Model: ECAPA big for Speaker verification (architecture of speechbrain/spkrec-ecapa-voxceleb)
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

# Output parameters
out_n_neurons: {out_neurons}

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>

""" + _SHARED_TAIL

XVECT_HPARAMS = """\
# ############################################################################
# Model: xvector for Speaker verification (architecture of speechbrain/spkrec-xvect-voxceleb)
# ############################################################################

# Feature parameters
n_mels: 24

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-xvect-voxceleb

# Output parameters
out_n_neurons: {out_neurons}

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: [512, 512, 512, 512, 1500]
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: 512

classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 512]
    activation: !name:torch.nn.LeakyReLU
    lin_blocks: 1
    lin_neurons: 512
    out_neurons: !ref <out_n_neurons>

""" + _SHARED_TAIL


def build_speechbrain_model_dir(kind: str, folder: Path, seed: int = 0, out_neurons: int = 16,
                                small: bool = False) -> Path:
    """Write a SpeechBrain model folder (``kind`` = "ecapa" or "xvector") with random weights.

    The files are produced the way SpeechBrain's checkpointer produces them: the modules are built from the
    hyperparameters by HyperPyYAML, ``torch_save`` writes module state dicts, ``InputNormalization._save``
    the embedding statistics and ``CategoricalEncoder.save`` the label file. ``out_neurons`` is the
    classifier size (7205 VoxCeleb speakers in the published models; small here, it is never used).
    ``small`` narrows the hidden layers (same layer types, same embedding sizes) for fast pipeline tests.
    """
    import torch
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.utils.checkpoints import torch_save

    text = {"ecapa": ECAPA_HPARAMS, "xvector": XVECT_HPARAMS}[kind].format(out_neurons=out_neurons)
    if small:
        text = (text.replace("channels: [1024, 1024, 1024, 1024, 3072]", "channels: [64, 64, 64, 64, 192]")
                .replace("attention_channels: 128", "attention_channels: 16")
                .replace("tdnn_channels: [512, 512, 512, 512, 1500]", "tdnn_channels: [64, 64, 64, 64, 150]"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(text, encoding="utf-8")
    torch.manual_seed(seed)
    hp = load_hyperpyyaml(text)
    emb_dim = 192 if kind == "ecapa" else 512
    with torch.no_grad():
        # Random, not zero: give the statistics something to normalise so a wrong load would show.
        norm = hp["mean_var_norm_emb"]
        norm(torch.randn(8, emb_dim), torch.ones(8))
    torch_save(hp["embedding_model"], folder / "embedding_model.ckpt")
    torch_save(hp["classifier"], folder / "classifier.ckpt")
    hp["mean_var_norm_emb"]._save(folder / "mean_var_norm_emb.ckpt")
    enc = hp["label_encoder"]
    enc.update_from_iterable([f"id{i:05d}" for i in range(out_neurons)])
    enc.save(folder / "label_encoder.txt")
    return folder


# ---- speech ----------------------------------------------------------------------------------------------

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A rolling stone gathers no moss.",
    "Every good boy deserves fudge, and every bird sings at dawn.",
    "Peter Piper picked a peck of pickled peppers.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood.",
    "It was the best of times, it was the worst of times.",
    "All that glitters is not gold, and not all who wander are lost.",
]
ESPEAK_VOICES = ["en+m1", "en+f3", "en+m3", "en+f2", "en-us+m2", "en-us+f4"]


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(path: Path, text: str, voice: str = "en+m1", speed: int = 160, engine: str = "espeak") -> Path:
    """Synthesise ``text`` into a 16-bit wav at ``path`` with espeak-ng (22.05 kHz) or flite (8 kHz/16 kHz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if engine == "flite":
        if shutil.which("flite") is None:
            pytest.skip("flite is not installed (apt-get install -y flite)")
        subprocess.run(["flite", "-voice", voice or "slt", "-t", text, "-o", str(path)], check=True,
                       capture_output=True)
    else:
        if not have_espeak():
            pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                       capture_output=True)
    return path


def write_audio(path: Path, wave: np.ndarray, sr: int, **kw) -> Path:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, **kw)
    return path


def read_audio(path: Path):
    import soundfile as sf

    return sf.read(str(path), dtype="float64")


@pytest.fixture(scope="session")
def sb_model_dirs(tmp_path_factory):
    """{"ecapa": folder, "xvector": folder}: SpeechBrain model folders with random weights."""
    root = tmp_path_factory.mktemp("sb_models")
    return {
        "ecapa": build_speechbrain_model_dir("ecapa", root / "spkrec-ecapa-voxceleb", seed=1),
        "xvector": build_speechbrain_model_dir("xvector", root / "spkrec-xvect-voxceleb", seed=2),
    }


@pytest.fixture(scope="session")
def sb_small_root(tmp_path_factory):
    """A folder holding narrow ECAPA / x-vector model folders under their hub names (fast pipeline tests)."""
    root = tmp_path_factory.mktemp("sb_small")
    build_speechbrain_model_dir("ecapa", root / "spkrec-ecapa-voxceleb", seed=3, small=True)
    build_speechbrain_model_dir("xvector", root / "spkrec-xvect-voxceleb", seed=4, small=True)
    return root


@pytest.fixture(scope="session")
def sb_models_root(sb_model_dirs):
    """The folder holding both model folders under their model hub names."""
    return sb_model_dirs["ecapa"].parent


@pytest.fixture(scope="session")
def speech_folder(tmp_path_factory):
    """A small folder corpus: 3 speakers (= sub-folders) x 3 utterances of espeak-ng speech, 1-3 s each."""
    root = tmp_path_factory.mktemp("speech_folder")
    for s in range(3):
        for u in range(3):
            speak(root / f"spk{s}" / f"utt{u}.wav", SENTENCES[(s * 3 + u) % len(SENTENCES)][:40 + 15 * u],
                  voice=ESPEAK_VOICES[s], speed=170 + 10 * u)
    return root


@pytest.fixture
def run_cli():
    """Run ``toucan-speakemb`` in a subprocess: returns CompletedProcess (text)."""

    def run(*args, env=None, timeout=600):
        import os

        e = dict(os.environ)
        e.setdefault("PYTHONWARNINGS", "ignore")
        if env:
            e.update(env)
        return subprocess.run([sys.executable, "-m", "toucan_speakemb.cli", *map(str, args)],
                              capture_output=True, text=True, env=e, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def one_torch_thread():
    """Encode with one thread in this process: DataLoader workers and subprocesses share the (few) cores,
    and oversubscribed intra-op threads make every op wait for the slowest one. Modules that encode audio
    use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- one clear error line ------------------------------------------------------------------------------

def one_line(excinfo) -> str:
    """The message of a raised error (``pytest.raises``' ExceptionInfo): one non-empty line. Returns it."""
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip(), repr(msg)
    return msg


def assert_one_error_line(result, *fragments, alone: bool = False) -> str:
    """A refused command as the user sees it: exit status 1, exactly one ``error: ...`` line on stderr holding
    every fragment, no traceback. ``result`` is a click ``Result`` (CliRunner; an uncaught exception would also
    exit with 1, so the exit must be click's own ``SystemExit``) or a finished process (``returncode``,
    ``stdout``, ``stderr``). ``alone``: that line is all the command printed. Returns the line."""
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == 1, (code, result.stdout[-2000:], result.stderr[-3000:], getattr(result, "exception", None))
    if hasattr(result, "exception"):
        assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    line = errors[0]
    assert line.startswith("error: ") and line[len("error: "):].strip(), line
    for f in fragments:
        assert f in line, (f, line)
    if alone:
        printed = [ln for ln in (result.stdout + "\n" + result.stderr).splitlines() if ln.strip()]
        assert printed == [line], printed
    return line


# ---- one tiny generator for the whole test run -----------------------------------------------------------
# Training is cheap but not free: tests that only need *a* generator share these (session scope) instead of
# training one per module. They are read-only: a test that writes next to them copies them first. Tests about
# training itself, or needing other settings (conditions, a subspace, a custom profile), train their own, shared
# within their module where several tests need the same run.

TINY = {"seed": 1, "model": {"hidden": 32, "blocks": 1, "time_dim": 16}, "diffusion": {"timesteps": 40},
        "train": {"steps": 10, "batch_size": 16, "threads": 1, "log_every": 5, "checkpoint_every": 10,
                  "warmup_steps": 2}, "sample": {"steps": 5, "batch_size": 64}}


def clustered_set(profile: str, n_speakers=40, per=3, seed=0) -> EmbeddingSet:
    """``per`` utterances of each of ``n_speakers`` speakers scattered around random centres, in ``profile``'s
    space: enough structure for a same-speaker threshold and for new-voice checks."""
    p = get_profile(profile)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_speakers, p.dim))
    x = np.repeat(centres, per, axis=0) + 0.5 * rng.normal(size=(n_speakers * per, p.dim))
    return EmbeddingSet(x.astype(np.float32), [f"s{i // per}" for i in range(n_speakers * per)], p)


def train_tiny(es: EmbeddingSet, out: Path) -> Generator:
    """Train the TINY config on ``es`` into the run folder ``out``; return the loaded generator."""
    train(es, out, TrainConfig.from_dict(TINY), progress=False)
    return Generator.load(out)


@pytest.fixture(scope="session")
def tiny_embeddings() -> EmbeddingSet:
    """The tiny generator's training set: 40 speakers x 3 utterances in the toucan-v3 space (192-dim)."""
    return clustered_set("toucan-v3")


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory, tiny_embeddings) -> Generator:
    """A toucan-v3 generator of the TINY config, trained once per test run; ``.path.parent`` is its run folder
    (generator.safetensors, train_speakers.safetensors, summary.json...)."""
    return train_tiny(tiny_embeddings, tmp_path_factory.mktemp("tiny_generator") / "run")


@pytest.fixture(scope="session")
def tiny_generator_v22(tmp_path_factory) -> Generator:
    """The same recipe in the toucan-v2.2 space (704-dim; 30 speakers x 2): a generator of another profile."""
    return train_tiny(clustered_set("toucan-v2.2", 30, 2), tmp_path_factory.mktemp("tiny_generator_v22") / "run")



@pytest.fixture
def one_torch_thread():
    """Tests that compare runs bit for bit and share two cores with other jobs: one torch thread each
    (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    torch.set_num_threads(1)
