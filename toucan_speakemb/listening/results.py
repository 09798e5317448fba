"""``listening-results``: summarise the answers files listeners downloaded from the test page.

Answers come as JSON or CSV (both written by the page), or as webMUSHRA's result CSVs (``lss.csv``,
``mushra.csv`` of the config export-listening-test wrote; they need the test's folder for systems and truths);
every file must belong to one test (same test id, and the test's own id when its test.json is given). With the
test's folder, each file must answer every trial, and what a trial is (system, pair, truth) comes from test.json
rather than from the file. The same session given twice (e.g. its JSON and its CSV) counts once.

Figures
    mos, mushra   per system: mean rating with a 95% confidence interval from the t distribution over all
                  ratings of that system (ratings of one listener are not independent; with few listeners read
                  the interval as optimistic), number of ratings and of listeners.
    ab-speaker    per system and pair type: share of correct answers with a 95% Wilson interval; for
                  same-voice pairs this is how often one voice is heard as one speaker, for different-voice and
                  vs-reference pairs how often voices are told apart (distinctness, novelty).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import List, Optional, Sequence

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_json
from toucan_speakemb.listening.design import KINDS

log = logging.getLogger(__name__)

ANSWERS_FORMAT = "toucan-speakemb-listening-answers"
SCALES = {"mos": (1, 5), "mushra": (0, 100)}


def _load_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpeakEmbError(f"answers file {path} is not valid JSON ({e})") from None
    if not isinstance(obj, dict) or obj.get("format") != ANSWERS_FORMAT:
        raise SpeakEmbError(f"{path} is not an answers file of a toucan-speakemb listening test")
    if not isinstance(obj.get("responses"), list) or not all(isinstance(r, dict) for r in obj["responses"]):
        raise SpeakEmbError(f"answers file {path} has no list of responses")
    missing = [k for k in ("test_id", "kind", "listener") if not isinstance(obj.get(k), str)]
    if missing:
        raise SpeakEmbError(f"answers file {path} lacks {', '.join(missing)}")
    for r in obj["responses"]:  # checked here so that a hand-edited file fails with its name, not later
        if r.get("rating") is not None:
            r["rating"] = _number(r["rating"], path)
    return obj


def _read_csv(path: Path) -> List[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise SpeakEmbError(f"answers file {path} is not a readable CSV ({e})") from None


def _load_webmushra_csv(path: Path, rows: List[dict], manifest: Optional[dict]) -> List[dict]:
    """webMUSHRA's results (service/write.php: results/<test id>/lss.csv or mushra.csv); the listener is the
    questionnaire field our config asks for.

    write.php appends each finished session's rows in one block and writes no session id, so a session ends
    where the listener name changes or a row repeats one of the session's answers (a trial in lss.csv, a
    trial's condition in mushra.csv): participants with one name are still separate sessions. Sessions without
    a name are each a listener of their own, as nothing says two of them are one.
    """
    if manifest is None:
        raise SpeakEmbError(f"{path} holds webMUSHRA results: give --test (the exported test folder) to know "
                            "their systems and truths")
    if "listener" not in rows[0]:
        raise SpeakEmbError(f"webMUSHRA results {path} have no 'listener' column (the config written by "
                            "export-listening-test asks each participant for one)")
    trials = {t["id"]: t for t in manifest["trials"]}
    sessions: List[dict] = []
    ses, answered, order, unnamed = None, set(), {}, 0  # the current session, its answers, trial -> position
    for row in rows:
        if row["session_test_id"] != manifest["test_id"]:
            raise SpeakEmbError(f"webMUSHRA results {path} are from another test ({row['session_test_id']}) "
                                f"than {manifest['test_id']}")
        t = trials.get(row.get("trial_id", ""))
        if t is None:
            raise SpeakEmbError(f"webMUSHRA results {path} name a trial the test does not have: {row.get('trial_id')}")
        name = (row["listener"] or "").strip()
        answer = (t["id"], row.get("rating_stimulus") if manifest["kind"] == "mushra" else None)
        if ses is None or name != ses["name"] or answer in answered:
            if not name:
                unnamed += 1
            ses = {"format": ANSWERS_FORMAT, "test_id": manifest["test_id"], "kind": manifest["kind"],
                   "listener": name or f"(no name: {path} session {unnamed})", "name": name,
                   "responses": []}
            sessions.append(ses)
            answered, order = set(), {}
        answered.add(answer)
        base = {"trial": t["id"], "position": order.setdefault(t["id"], len(order) + 1)}
        if manifest["kind"] == "mushra":
            keys = {sid.replace("/", "__"): sid for sid in t["stimuli"]}
            keys["reference"] = t["reference"]  # webMUSHRA's name for the hidden reference
            sid = keys.get(row.get("rating_stimulus", ""))
            if sid is None:
                raise SpeakEmbError(f"webMUSHRA results {path}: trial {t['id']} has no condition "
                                    f"{row.get('rating_stimulus')!r}")
            score = _number(row.get("rating_score"), path)
            ses["responses"].append({**base, "item": t["item"], "stimulus": sid,
                                     "system": manifest["stimuli"][sid]["system"], "rating": score})
        else:
            value = (row.get("stimuli_rating") or "").strip()
            if manifest["kind"] == "mos":
                sid = t["stimuli"][0]
                ses["responses"].append({**base, "stimulus": sid, "system": manifest["stimuli"][sid]["system"],
                                         "rating": _number(value, path)})
            else:
                a, b = t["stimuli"]
                ses["responses"].append({**base, "stimulus": a, "stimulus_b": b, "system": t["system"],
                                         "pair_type": t["pair_type"], "truth": t["truth"], "answer": value,
                                         "correct": value == t["truth"]})
    for name, n in Counter(ses.pop("name") for ses in sessions).items():
        if name and n > 1:
            log.warning("%s: %d sessions under the listener name %r; counted as one listener", path, n, name)
    return sessions


def _number(value, path, what: str = "rating") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpeakEmbError(f"answers file {path}: {what} {value!r} is not a number")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SpeakEmbError(f"answers file {path}: {what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise SpeakEmbError(f"answers file {path}: {what} {value!r} is not a finite number")
    return number


def _load_csv(path: Path, manifest: Optional[dict]) -> List[dict]:
    rows = _read_csv(path)
    if rows and "session_test_id" in rows[0]:
        return _load_webmushra_csv(path, rows, manifest)
    need = {"test_id", "kind", "listener", "trial", "stimulus"}
    if not rows or not need <= set(rows[0]):
        raise SpeakEmbError(f"{path} is not an answers file of a toucan-speakemb listening test "
                            f"(needs the columns {', '.join(sorted(need))})")
    heads = {(r["test_id"], r["kind"], r["listener"]) for r in rows}
    if len(heads) > 1:
        raise SpeakEmbError(f"answers file {path} mixes several tests or listeners")
    test_id, kind, listener = heads.pop()
    responses = []
    for r in rows:
        resp = {k: v for k, v in r.items() if k not in ("test_id", "kind", "listener") and v != ""}
        for k in ("rating", "position", "plays"):
            if k in resp:
                resp[k] = _number(resp[k], path) if k == "rating" else int(_number(resp[k], path, k))
        if "correct" in resp:
            resp["correct"] = resp["correct"].lower() == "true"
        responses.append(resp)
    return [{"format": ANSWERS_FORMAT, "test_id": test_id, "kind": kind, "listener": listener, "responses": responses}]


def _session_key(ans: dict) -> tuple:
    """What identifies one listening session across its JSON and CSV copies."""
    def value(r):
        return float(r["rating"]) if r.get("rating") is not None else r.get("answer")
    rows = sorted((str(r.get("trial")), str(r.get("stimulus")), str(value(r))) for r in ans["responses"])
    return ans["test_id"], ans["listener"], tuple(rows)


def _check_against_test(ans: dict, manifest: dict) -> None:
    """With the test at hand, what a trial is (its systems, pair, truth) is taken from test.json, not from the
    answers file, and every trial must be answered once (the page saves only complete answers)."""
    kind, trials = manifest["kind"], {t["id"]: t for t in manifest["trials"]}
    # what one response answers: (trial, stimulus); mushra rates every stimulus of a trial, the others one
    expected = {(t["id"], sid) for t in manifest["trials"] for sid in (t["stimuli"] if kind == "mushra" else t["stimuli"][:1])}
    answered = set()
    for r in ans["responses"]:
        key = (r.get("trial"), r.get("stimulus"))
        if key not in expected:
            raise SpeakEmbError(f"answers file {ans['file']}: trial {key[0]} with stimulus {key[1]} is not part of "
                                f"test {manifest['test_id']}")
        if key in answered:
            raise SpeakEmbError(f"answers file {ans['file']} answers trial {key[0]} (stimulus {key[1]}) twice")
        answered.add(key)
        t = trials[key[0]]
        if kind == "ab-speaker":
            r.update(stimulus_b=t["stimuli"][1], system=t["system"], pair_type=t["pair_type"], truth=t["truth"],
                     correct=r.get("answer") == t["truth"])
        else:
            r["system"] = manifest["stimuli"][key[1]]["system"]
    if answered != expected:
        open_trials = {trial for trial, _ in expected - answered}
        raise SpeakEmbError(f"answers file {ans['file']} answers {len(trials) - len(open_trials)} of {len(trials)} "
                            f"trials of test "
                            f"{manifest['test_id']} completely (incomplete answers)")


def load_answers(paths: Sequence, manifest: Optional[dict] = None) -> List[dict]:
    """Answers files as dicts, checked to belong to one test; duplicate sessions are dropped (logged)."""
    if not paths:
        raise SpeakEmbError("no answers files given")
    sessions, seen = [], {}
    for p in map(Path, paths):
        if not p.is_file():
            raise SpeakEmbError(f"answers file not found: {p}")
        for ans in _load_csv(p, manifest) if p.suffix.lower() == ".csv" else [_load_json(p)]:
            if ans.get("kind") not in KINDS:
                raise SpeakEmbError(f"answers file {p} has an unknown test kind {ans.get('kind')!r}")
            ans["file"] = str(p)
            key = _session_key(ans)
            if key in seen:
                log.warning("%s repeats the session of %s (listener %s); counted once", p, seen[key], ans["listener"])
                continue
            seen[key] = p
            sessions.append(ans)
    ids = sorted({a["test_id"] for a in sessions})
    if manifest is not None:
        wrong = [a["file"] for a in sessions if a["test_id"] != manifest["test_id"]]
        if wrong:
            raise SpeakEmbError(f"{len(wrong)} answers file(s) are from another test than {manifest['test_id']}: "
                                + ", ".join(wrong[:5]))
        for a in sessions:
            _check_against_test(a, manifest)
    elif len(ids) > 1:
        by = defaultdict(list)
        for a in sessions:
            by[a["test_id"]].append(Path(a["file"]).name)
        raise SpeakEmbError("answers files from different tests: " +
                            "; ".join(f"{t}: {', '.join(f[:3])}" for t, f in by.items()))
    return sessions


def t_interval(values: Sequence[float], level: float = 0.95):
    """(mean, half-width of the two-sided t confidence interval); half-width NaN for fewer than 2 values."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def wilson_interval(k: int, n: int, z: float = 1.959963984540054):
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return centre - half, centre + half


def summarise(sessions: List[dict]) -> dict:
    """The figures of a set of answers (see the module doc) as a JSON-able dict."""
    kind = sessions[0]["kind"]
    if any(a["kind"] != kind for a in sessions):
        raise SpeakEmbError("answers files of different test kinds: " + ", ".join(sorted({a["kind"] for a in sessions})))
    listeners = sorted({a["listener"] for a in sessions})
    out = {"test_id": sessions[0]["test_id"], "kind": kind, "sessions": len(sessions), "listeners": len(listeners),
           "files": [a["file"] for a in sessions], "rows": []}
    if kind in SCALES:
        lo, hi = SCALES[kind]
        ratings, who = defaultdict(list), defaultdict(set)
        for a in sessions:
            for r in a["responses"]:
                v = r.get("rating")
                if v is None:
                    raise SpeakEmbError(f"answers file {a['file']}: trial {r.get('trial')} has no rating (incomplete answers)")
                if not lo <= float(v) <= hi:
                    raise SpeakEmbError(f"answers file {a['file']}: rating {v} is outside {lo}-{hi}")
                if not r.get("system"):
                    raise SpeakEmbError(f"answers file {a['file']}: trial {r.get('trial')} names no system")
                ratings[r["system"]].append(float(v))
                who[r["system"]].add(a["listener"])
        for system in sorted(ratings):
            mean, half = t_interval(ratings[system])
            out["rows"].append({"system": system, "mean": mean, "ci95": half, "n": len(ratings[system]),
                                "listeners": len(who[system])})
    else:
        hits, who = defaultdict(list), defaultdict(set)
        for a in sessions:
            for r in a["responses"]:
                if r.get("answer") not in ("same", "different") or r.get("truth") not in ("same", "different"):
                    raise SpeakEmbError(f"answers file {a['file']}: trial {r.get('trial')} lacks an answer or its "
                                        "truth (incomplete answers)")
                key = (r.get("system", "?"), r.get("pair_type", "?"))
                hits[key].append(r["answer"] == r["truth"])
                who[key].add(a["listener"])
        for (system, pair_type) in sorted(hits):
            h = hits[(system, pair_type)]
            lo_, hi_ = wilson_interval(sum(h), len(h))
            out["rows"].append({"system": system, "pair_type": pair_type, "accuracy": sum(h) / len(h),
                                "ci95_low": lo_, "ci95_high": hi_, "n": len(h), "listeners": len(who[(system, pair_type)])})
    return out


def format_table(summary: dict) -> str:
    """A markdown table of the summary."""
    head = (f"test {summary['test_id']} ({summary['kind']}): {summary['listeners']} listener(s), "
            f"{summary['sessions']} session(s)\n\n")
    if summary["kind"] in SCALES:
        scale = "MOS" if summary["kind"] == "mos" else "MUSHRA"
        lines = [f"| system | {scale} | 95% CI | ratings | listeners |", "|---|---:|---:|---:|---:|"]
        for r in summary["rows"]:
            ci = "-" if math.isnan(r["ci95"]) else f"± {r['ci95']:.2f}"
            lines.append(f"| {r['system']} | {r['mean']:.2f} | {ci} | {r['n']} | {r['listeners']} |")
    else:
        lines = ["| system | pair type | accuracy | 95% CI | pairs | listeners |", "|---|---|---:|---:|---:|---:|"]
        for r in summary["rows"]:
            lines.append(f"| {r['system']} | {r['pair_type']} | {r['accuracy']:.2f} | "
                         f"{r['ci95_low']:.2f}-{r['ci95_high']:.2f} | {r['n']} | {r['listeners']} |")
    return head + "\n".join(lines) + "\n"


def plot_summary(summary: dict, path: Path) -> Path:
    from toucan_speakemb.core.plots import _figure, _save

    plt, fig = _figure((6.5, 4))
    ax = fig.add_subplot(111)
    rows = summary["rows"]
    if summary["kind"] in SCALES:
        x = range(len(rows))
        err = [0 if math.isnan(r["ci95"]) else r["ci95"] for r in rows]
        ax.bar(x, [r["mean"] for r in rows], yerr=err, capsize=5, color="#4c78a8")
        ax.set_xticks(list(x), [r["system"] for r in rows], rotation=20, ha="right")
        lo, hi = SCALES[summary["kind"]]
        ax.set_ylim(lo if summary["kind"] == "mos" else 0, hi)
        ax.set_ylabel(("MOS" if summary["kind"] == "mos" else "MUSHRA score") + " (95% CI)")
    else:
        labels = [f"{r['system']}\n{r['pair_type']}" for r in rows]
        acc = [r["accuracy"] for r in rows]
        err = [[a - r["ci95_low"] for a, r in zip(acc, rows)], [r["ci95_high"] - a for a, r in zip(acc, rows)]]
        colors = {"same": "#54a24b", "different": "#4c78a8", "vs-reference": "#e45756"}
        ax.bar(range(len(rows)), acc, yerr=err, capsize=5, color=[colors.get(r["pair_type"], "#999") for r in rows])
        ax.set_xticks(list(range(len(rows))), labels, fontsize=8)
        ax.axhline(0.5, color="#777", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
        ax.set_ylabel("share answered correctly (95% CI)")
    ax.set_title(f"{summary['kind']} {summary['test_id']}: {summary['listeners']} listener(s)")
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, Path(path))


def listening_results(answers: Sequence, test=None, out: Optional[Path] = None) -> dict:
    """Load, check and summarise answers; with ``out`` also write results.json and results.png there."""
    from toucan_speakemb.listening.export import load_manifest

    manifest = load_manifest(test) if test else None
    sessions = load_answers(answers, manifest)
    summary = summarise(sessions)
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise SpeakEmbError(f"output {out} is a file, expected a folder")
        atomic_write_json(out / "results.json", summary)
        plot_summary(summary, out / "results.png")
    return summary
