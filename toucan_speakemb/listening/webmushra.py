"""The same test as a webMUSHRA experiment (https://github.com/audiolabs/webMUSHRA), for labs that run it.

Written in webMUSHRA's documented YAML format (doc/experimenter.md): top-level ``testname``, ``testId``,
``bufferSize``, ``stopOnErrors``, ``showButtonPreviousPage``, ``remoteService`` and ``pages``; a nested page
list whose first element is ``random`` is shuffled per participant. File paths are relative to webMUSHRA's
root folder, so the output mirrors its layout::

    webmushra/configs/<test id>.yaml
    webmushra/configs/resources/audio/<test id>/<system>/<item>.wav

Copy the contents of ``webmushra/`` into the webMUSHRA folder and open ``...?config=<test id>.yaml``.

How each kind maps onto webMUSHRA pages:

``mos``        one ``likert_single_stimulus`` page per stimulus, 5 points (1 Bad ... 5 Excellent; webMUSHRA's
               own star images), ``mustRate`` and ``mustPlayback: ended``.
``mushra``     one ``mushra`` page per item: ``reference`` = the real recording (webMUSHRA adds it again as the
               hidden reference), ``stimuli`` = each system's rendering. webMUSHRA plays the conditions of a
               page in sync, so their lengths must match: every file of a page is padded with silence to the
               longest one (only in this copy).
``ab-speaker`` webMUSHRA has no same/different page, so each pair becomes one ``likert_single_stimulus`` page
               whose stimulus is A, 0.7 s of silence, then B, with the answers "same" / "different".

The finish page asks for a listener name (a questionnaire field, so a column of webMUSHRA's result CSVs);
``listening-results ... --test OUT`` reads ``results/<test id>/lss.csv`` and ``mushra.csv``.
Condition keys carry what the results must be matched by: ``<system>__<item>`` (mos, mushra) and
``<trial>__<pair type>__<truth>`` (ab-speaker); the trial ids are those of test.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import yaml

from toucan_speakemb.core.fileio import atomic_write_bytes, atomic_write_text
from toucan_speakemb.listening.stimuli import PreparedAudio, wav_bytes

PAIR_GAP_SECONDS = 0.7
_STAR = "configs/resources/images/star_{}.png"  # shipped with webMUSHRA itself


def _likert(points):
    return [{"value": v, "label": label, "img": _STAR.format("off"), "imgSelected": _STAR.format("on"),
             "imgHigherResponseSelected": _STAR.format("on")} for v, label in points]


MOS_POINTS = [(1, "1 Bad"), (2, "2 Poor"), (3, "3 Fair"), (4, "4 Good"), (5, "5 Excellent")]


def write_webmushra(folder: Path, manifest: dict, prepared: PreparedAudio, wavs: Dict[str, bytes]) -> Path:
    """Write ``configs/<test id>.yaml`` and its audio under ``folder``; returns the config's path."""
    test_id, kind = manifest["test_id"], manifest["kind"]
    audio_root = f"configs/resources/audio/{test_id}"
    stimuli = manifest["stimuli"]
    rate = prepared.sample_rate

    def put(rel: str, data: bytes) -> str:
        atomic_write_bytes(folder / rel, data)
        return rel

    def key(sid: str) -> str:
        return sid.replace("/", "__")

    pages = []
    for t in manifest["trials"]:
        if kind == "mos":
            sid = t["stimuli"][0]
            path = put(f"{audio_root}/{sid}.wav", wavs[sid])
            pages.append({"type": "likert_single_stimulus", "id": t["id"], "name": "Naturalness",
                          "content": "How natural does this voice sound?", "mustRate": True,
                          "mustPlayback": "ended", "stimuli": {key(sid): path}, "response": _likert(MOS_POINTS)})
        elif kind == "mushra":
            sids = t["stimuli"]
            longest = max(len(prepared.waves[s]) for s in sids)
            padded = {s: wav_bytes(np.pad(prepared.waves[s], (0, longest - len(prepared.waves[s]))), rate) for s in sids}
            ref = t["reference"]
            pages.append({
                "type": "mushra", "id": t["id"], "name": "Naturalness",
                "content": "Rate how natural each sample sounds (0 bad - 100 excellent). The reference is a real "
                           "recording.",
                "showWaveform": False, "enableLooping": False, "strict": False,
                "reference": put(f"{audio_root}/{t['id']}/{key(ref)}.wav", padded[ref]),
                "createAnchor35": False, "createAnchor70": False, "randomize": True, "showConditionNames": False,
                "stimuli": {key(s): put(f"{audio_root}/{t['id']}/{key(s)}.wav", padded[s]) for s in sids if s != ref},
            })
        else:
            a, b = t["stimuli"]
            gap = np.zeros(int(PAIR_GAP_SECONDS * rate), dtype=np.float32)
            joined = np.concatenate([prepared.waves[a], gap, prepared.waves[b]])
            path = put(f"{audio_root}/pairs/{t['id']}.wav", wav_bytes(joined, rate))
            pages.append({"type": "likert_single_stimulus", "id": t["id"], "name": "Same or different speaker?",
                          "content": f"You hear A, a short pause, then B ({stimuli[a]['seconds']:.1f} s + "
                                     f"{stimuli[b]['seconds']:.1f} s). Are A and B spoken by the same speaker?",
                          "mustRate": True, "mustPlayback": "ended",
                          "stimuli": {f"{t['id']}__{t['pair_type']}__{t['truth']}": path},
                          "response": [{"value": "same", "label": "Same speaker"},
                                       {"value": "different", "label": "Different speakers"}]})
    config = {
        "testname": manifest["title"], "testId": test_id, "bufferSize": 2048, "stopOnErrors": True,
        "showButtonPreviousPage": True, "remoteService": "service/write.php",
        "pages": [
            {"type": "generic", "id": "welcome", "name": "Welcome",
             "content": "Please use headphones in a quiet room. " + manifest["title"]},
            ["random", *pages],
            {"type": "finish", "name": "Thank you", "content": "Thank you for taking part!",
             "showResults": False, "writeResults": True,
             # the results CSVs carry questionnaire fields as columns: listening-results counts listeners by it
             "questionnaire": [{"type": "text", "label": "Your name or listener code", "name": "listener"}]},
        ],
    }
    text = (f"# webMUSHRA experiment written by {manifest['created_by']} (export-listening-test)\n"
            f"# kind: {kind}; trial ids match test.json of the same export\n")
    text += yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=110)
    path = folder / "configs" / f"{test_id}.yaml"
    atomic_write_text(path, text)
    return path
