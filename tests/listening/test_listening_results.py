"""listening-results: the figures from answers files (in the page's documented format), and answers that do not
belong together refused with one line."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from conftest import assert_one_error_line
from toucan_speakemb.cli.main import main
from toucan_speakemb.listening.results import listening_results, wilson_interval

COLUMNS = ["test_id", "kind", "listener", "trial", "position", "item", "stimulus", "system", "voice", "stimulus_b",
           "voice_b", "pair_type", "truth", "answer", "correct", "rating", "plays"]


def answers(test_id, kind, listener, responses):
    return {"format": "toucan-speakemb-listening-answers", "version": 1, "test_id": test_id, "kind": kind,
            "listener": listener, "seed": 0, "order_seed": 1, "n_trials": len(responses),
            "started_at": "2026-11-25T10:00:00Z", "finished_at": "2026-11-25T10:10:00Z", "responses": responses}


def write(path, ans):
    if path.suffix == ".json":
        path.write_text(json.dumps(ans))
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, COLUMNS)
        w.writeheader()
        for r in ans["responses"]:
            w.writerow({"test_id": ans["test_id"], "kind": ans["kind"], "listener": ans["listener"],
                        **{k: (str(v).lower() if isinstance(v, bool) else v) for k, v in r.items()}})
        path.write_text(buf.getvalue())
    return path


def mos_session(listener, ratings_by_system, test_id="mos-abc"):
    rows, k = [], 0
    for system, ratings in ratings_by_system.items():
        for i, v in enumerate(ratings):
            k += 1
            rows.append({"trial": f"t{k:03d}", "position": k, "stimulus": f"{system}/u{i}", "system": system,
                         "voice": f"v{i}", "rating": v, "plays": 1})
    return answers(test_id, "mos", listener, rows)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_mos_means_with_t_intervals_per_system_and_listener_counts(tmp_path):
    a = write(tmp_path / "a.json", mos_session("ana", {"generated": [4, 3, 5], "reference": [5, 5]}))
    b = write(tmp_path / "b.csv", mos_session("bo", {"generated": [2, 4, 3], "reference": [4, 5]}))
    s = listening_results([a, b], out=tmp_path / "res")
    rows = {r["system"]: r for r in s["rows"]}
    gen = [4, 3, 5, 2, 4, 3]
    lo, hi = stats.t.interval(0.95, len(gen) - 1, loc=np.mean(gen), scale=stats.sem(gen))
    assert rows["generated"]["mean"] == pytest.approx(np.mean(gen))
    assert rows["generated"]["ci95"] == pytest.approx((hi - lo) / 2)
    assert (rows["generated"]["n"], rows["generated"]["listeners"], s["listeners"]) == (6, 2, 2)
    assert rows["reference"]["mean"] == pytest.approx(4.75)
    assert json.loads((tmp_path / "res" / "results.json").read_text())["rows"] == s["rows"]
    assert (tmp_path / "res" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_different_accuracy_per_pair_type_with_wilson_intervals(tmp_path):
    rows = []
    plan = [("same", "same")] * 3 + [("same", "different")] + [("different", "different")] * 2 + \
           [("different", "same")] * 2
    for k, (truth, answer) in enumerate(plan):
        rows.append({"trial": f"t{k}", "position": k + 1, "stimulus": f"generated/a{k}", "stimulus_b": f"generated/b{k}",
                     "system": "generated", "pair_type": truth, "truth": truth, "answer": answer,
                     "correct": truth == answer, "plays": 2})
    path = write(tmp_path / "ab.csv", answers("ab-speaker-x", "ab-speaker", "ana", rows))
    r = invoke("listening-results", path)
    assert r.exit_code == 0, r.output
    assert "| generated | same | 0.75 |" in r.output and "| generated | different | 0.50 |" in r.output
    s = listening_results([path])
    same = next(x for x in s["rows"] if x["pair_type"] == "same")
    assert (same["ci95_low"], same["ci95_high"]) == pytest.approx(wilson_interval(3, 4))
    lo, hi = wilson_interval(3, 4)
    assert 0 < lo < 0.75 < hi < 1


def test_wilson_interval_matches_its_formula_at_known_points():
    # 50 of 100: 0.5 +- 1.96 * sqrt(.25/100) / (1 + 1.96^2/100), centred at 0.5
    lo, hi = wilson_interval(50, 100)
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_a_session_given_as_json_and_csv_counts_once(tmp_path):
    s = mos_session("ana", {"generated": [4, 3, 5]})
    res = listening_results([write(tmp_path / "a.json", s), write(tmp_path / "a.csv", s)])
    assert (res["sessions"], res["rows"][0]["n"]) == (1, 3)


def test_answers_from_another_test_are_refused(tmp_path):
    a = write(tmp_path / "a.json", mos_session("ana", {"generated": [4]}, test_id="mos-111"))
    b = write(tmp_path / "b.json", mos_session("bo", {"generated": [3]}, test_id="mos-222"))
    r = invoke("listening-results", a, b)
    assert r.exit_code == 1 and "answers files from different tests" in r.stderr and "mos-222" in r.stderr
    test = tmp_path / "test"
    test.mkdir()
    (test / "test.json").write_text(json.dumps({"format": "toucan-speakemb-listening-test", "test_id": "mos-111",
                                                "kind": "mos", "stimuli": {"generated/u0": {"system": "generated"}},
                                                "trials": [{"id": "t001", "stimuli": ["generated/u0"]}]}))
    r = invoke("listening-results", b, "--test", test)
    assert r.exit_code == 1 and "from another test than mos-111" in r.stderr and "b.json" in r.stderr
    assert invoke("listening-results", a, "--test", test).exit_code == 0


@pytest.mark.parametrize("content, words", [
    ('{"hello": 1}', "not an answers file"),
    ("not json at all", "not valid JSON"),
    ("a,b\n1,2\n", "not an answers file"),
    ('{"format": "toucan-speakemb-listening-answers", "responses": []}', "lacks test_id, kind, listener"),
    ('{"format": "toucan-speakemb-listening-answers", "responses": [3]}', "no list of responses"),
])
def test_files_that_are_not_answers_are_refused(tmp_path, content, words):
    path = tmp_path / ("x.csv" if content.startswith("a,b") else "x.json")
    path.write_text(content)
    r = invoke("listening-results", path)
    assert r.exit_code == 1 and words in r.stderr and str(path) in r.stderr


@pytest.mark.parametrize("fmt, field, value, words", [
    ("json", "rating", "x", "rating 'x' is not a number"),
    ("json", "rating", True, "rating True is not a number"),
    ("json", "rating", [4], "rating [4] is not a number"),
    ("csv", "rating", "x", "rating 'x' is not a number"),
    ("csv", "rating", "nan", "rating 'nan' is not a finite number"),
    ("csv", "position", "nan", "position 'nan' is not a finite number"),
    ("csv", "plays", "two", "plays 'two' is not a number"),
])
def test_ratings_and_counts_that_are_not_numbers_are_one_error_line(tmp_path, fmt, field, value, words):
    s = mos_session("ana", {"generated": [4, 3]})
    s["responses"][1][field] = value
    path = write(tmp_path / f"a.{fmt}", s)
    assert_one_error_line(invoke("listening-results", path), words, str(path))


def test_incomplete_answers_are_refused(tmp_path):
    s = mos_session("ana", {"generated": [4, 3]})
    del s["responses"][1]["rating"]
    r = invoke("listening-results", write(tmp_path / "a.json", s))
    assert r.exit_code == 1 and "has no rating" in r.stderr
    out_of_scale = mos_session("ana", {"generated": [4, 7]})
    r = invoke("listening-results", write(tmp_path / "b.json", out_of_scale))
    assert r.exit_code == 1 and "outside 1-5" in r.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from listening_helpers import make_audio_tree
    from toucan_speakemb.listening import export_listening_test

    root = tmp_path_factory.mktemp("wm")
    audio, real = make_audio_tree(root, systems=("generated", "baseline"), voices=2, utts=2)
    return {kind: export_listening_test(audio, root / kind, kind=kind, reference_dir=real, pairs_per_type=1,
                                        max_per_system=2, progress=False) for kind in ("mos", "mushra", "ab-speaker")}


def webmushra_csv(path, header, rows):
    """A results file as webMUSHRA's service/write.php writes it: session_test_id, the questionnaire fields,
    then the page type's columns."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue())
    return path


def test_webmushra_results_are_read_with_the_test_folder(exported, tmp_path):
    from toucan_speakemb.listening import load_manifest

    t = exported["mushra"]
    m = load_manifest(t.out)
    rows, expected = [], {}
    for listener, offset in (("ana", 0), ("bo", 10)):
        for tr in m["trials"]:
            for sid in tr["stimuli"]:
                key = "reference" if sid == tr["reference"] else sid.replace("/", "__")
                score = {"generated": 40, "baseline": 60, "reference": 90}[m["stimuli"][sid]["system"]] + offset
                rows.append([t.test_id, listener, tr["id"], key, score, 1234, ""])
                expected.setdefault(m["stimuli"][sid]["system"], []).append(score)
    path = webmushra_csv(tmp_path / "mushra.csv", ["session_test_id", "listener", "trial_id", "rating_stimulus",
                                                   "rating_score", "rating_time", "rating_comment"], rows)
    s = listening_results([path], test=t.out)
    assert s["listeners"] == 2
    assert {r["system"]: r["mean"] for r in s["rows"]} == pytest.approx({k: np.mean(v) for k, v in expected.items()})
    r = invoke("listening-results", path)
    assert r.exit_code == 1 and "give --test" in r.stderr

    ab = exported["ab-speaker"]
    mab = load_manifest(ab.out)
    rows = [[ab.test_id, "ana", tr["id"], " same ", f"{tr['id']}__{tr['pair_type']}__{tr['truth']}", 2100]
            for tr in mab["trials"]]  # write.php pads the rating with spaces
    path = webmushra_csv(tmp_path / "lss.csv", ["session_test_id", "listener", "trial_id", "stimuli_rating",
                                                "stimuli", "rating_time"], rows)
    s = listening_results([path], test=ab.out)
    for row in s["rows"]:
        assert row["accuracy"] == (1.0 if row["pair_type"] == "same" else 0.0)
    r = invoke("listening-results", path, "--test", exported["mos"].out)
    assert r.exit_code == 1 and "another test" in r.stderr


def test_webmushra_sessions_are_told_apart_even_under_one_or_no_name(exported, tmp_path):
    """write.php appends each session's rows as one block without a session id: a repeated answer starts the
    next session, so two participants who typed the same name, or none, are not merged into one."""
    from toucan_speakemb.listening import load_manifest

    t = exported["mos"]
    m = load_manifest(t.out)
    rows = []
    for listener, rating in (("", 1), ("", 2), ("ana", 3), ("ana", 4), ("bo", 5)):
        for tr in m["trials"]:
            sid = tr["stimuli"][0]
            rows.append([t.test_id, listener, tr["id"], f" {rating} ", sid.replace("/", "__"), 900])
    path = webmushra_csv(tmp_path / "lss.csv", ["session_test_id", "listener", "trial_id", "stimuli_rating",
                                                "stimuli", "rating_time"], rows)
    s = listening_results([path], test=t.out)
    assert s["sessions"] == 5
    assert s["listeners"] == 4  # the two unnamed sessions are two listeners; the two of "ana" one
    assert sum(r["n"] for r in s["rows"]) == 5 * len(m["trials"])
    assert all(r["mean"] == pytest.approx(3.0) for r in s["rows"])

    # mushra: one session per page of conditions; the second "ana" starts with the page the first one ended on
    t = exported["mushra"]
    m = load_manifest(t.out)
    rows = []
    for score, trials in ((20, m["trials"]), (80, m["trials"][::-1])):
        for tr in trials:
            for sid in tr["stimuli"]:
                key = "reference" if sid == tr["reference"] else sid.replace("/", "__")
                rows.append([t.test_id, "ana", tr["id"], key, score, 1234, ""])
    assert rows[len(rows) // 2 - 1][2] == rows[len(rows) // 2][2]
    path = webmushra_csv(tmp_path / "mushra.csv", ["session_test_id", "listener", "trial_id", "rating_stimulus",
                                                   "rating_score", "rating_time", "rating_comment"], rows)
    s = listening_results([path], test=t.out)
    assert (s["sessions"], s["listeners"]) == (2, 1)
    assert all(r["mean"] == pytest.approx(50.0) and r["n"] == 2 * len(m["trials"]) for r in s["rows"])


def page_answers(test, listener="ana", skip=0):
    """Answers as the page writes them for ``test`` (every trial but the last ``skip``), right for every trial."""
    from toucan_speakemb.listening import load_manifest

    m = load_manifest(test.out)
    rows = []
    for k, t in enumerate(m["trials"][:len(m["trials"]) - skip], 1):
        if test.kind == "ab-speaker":
            rows.append({"trial": t["id"], "position": k, "stimulus": t["stimuli"][0], "stimulus_b": t["stimuli"][1],
                         "system": t["system"], "pair_type": t["pair_type"], "truth": t["truth"],
                         "answer": t["truth"], "correct": True, "plays": 2})
        else:
            for sid in (t["stimuli"] if test.kind == "mushra" else t["stimuli"][:1]):
                rows.append({"trial": t["id"], "position": k, "stimulus": sid,
                             "system": m["stimuli"][sid]["system"], "rating": 3, "plays": 1})
    return answers(test.test_id, test.kind, listener, rows)


@pytest.mark.parametrize("kind", ["mos", "mushra", "ab-speaker"])
def test_with_the_test_folder_an_answers_file_must_answer_every_trial(exported, tmp_path, kind):
    t = exported[kind]
    assert listening_results([write(tmp_path / "full.json", page_answers(t))], test=t.out)["sessions"] == 1
    path = write(tmp_path / "part.csv", page_answers(t, skip=1))
    assert_one_error_line(invoke("listening-results", path, "--test", t.out),
                          f"answers {t.n_trials - 1} of {t.n_trials} trials", "incomplete")
    twice = page_answers(t)
    twice["responses"].append(dict(twice["responses"][0]))
    r = invoke("listening-results", write(tmp_path / "twice.json", twice), "--test", t.out)
    assert r.exit_code == 1 and "twice" in r.stderr, r.stderr


def test_with_the_test_folder_systems_and_truths_come_from_the_test_not_the_answers(exported, tmp_path):
    t = exported["ab-speaker"]
    honest = page_answers(t)
    forged = page_answers(t)
    for r in forged["responses"]:  # a file that claims every answer was right and belongs to one system
        r.update(truth="same", answer="same", correct=True, system="generated", pair_type="same",
                 stimulus_b="generated/whatever")
    path = write(tmp_path / "forged.json", forged)
    s = listening_results([path], test=t.out)
    right = listening_results([write(tmp_path / "honest.json", honest)], test=t.out)
    assert {(r["system"], r["pair_type"]) for r in s["rows"]} == {(r["system"], r["pair_type"]) for r in right["rows"]}
    by = {(r["system"], r["pair_type"]): r["accuracy"] for r in s["rows"]}
    assert by[("generated", "different")] == 0.0 and by[("generated", "same")] == 1.0  # answered "same" throughout

    m = exported["mos"]
    forged = page_answers(m)
    for r in forged["responses"]:
        r["system"] = "reference"
    s = listening_results([write(tmp_path / "mos.json", forged)], test=m.out)
    assert {r["system"] for r in s["rows"]} == {"generated", "baseline", "reference"}
