"""The listening-test page in a real headless browser (Debian's chromium driven by Playwright).

A listener's run, as specified: the page loads with no console errors, every stimulus plays to its end, a
complete run of ratings downloads answers (JSON and CSV) that listening-results loads back, the order is the
seeded one, and an incomplete run is refused with a message.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from listening_helpers import make_audio_tree
from toucan_speakemb.listening import export_listening_test, listening_results, load_manifest
from toucan_speakemb.listening.design import presentation_order

CHROMIUM = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                                             if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(bash scripts/install.sh --test installs chromium and chromium-driver)")

PLAY_ALL = """async () => {
  const els = Array.from(document.querySelectorAll('#samples audio'));
  return await Promise.all(els.map((a) => new Promise((resolve) => {
    const done = (ended) => resolve({stimulus: a.dataset.stimulus, ended, time: a.currentTime, duration: a.duration});
    a.addEventListener('ended', () => done(true), {once: true});
    setTimeout(() => done(false), 15000);
    a.playbackRate = 4;  // still decoded and played to its end, in a quarter of the time
    a.play().catch(() => done(false));
  })));
}"""


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("chromium is installed but the Python package playwright is not (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def audio_tree(tmp_path_factory):
    return make_audio_tree(tmp_path_factory.mktemp("lt_audio"), systems=("generated", "baseline"), voices=2, utts=1)


@pytest.fixture(scope="module")
def pair_tree(tmp_path_factory):
    return make_audio_tree(tmp_path_factory.mktemp("lt_pairs"), systems=("generated",), voices=2, utts=2)


def open_page(browser, test):
    page = browser.new_page(accept_downloads=True)
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
    page.goto(test.page.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, problems


def answer_page(page, kind: str, k: int) -> dict:
    """Play every sample of the current page to its end, then answer; returns what was answered."""
    played = page.evaluate(PLAY_ALL)
    assert played and all(p["ended"] and p["time"] > 0 for p in played), played
    if kind == "mos":
        rating = k % 5 + 1
        page.get_by_label(f"{rating} ").check()
        return {"rating": rating}
    if kind == "ab-speaker":
        answer = "same" if k % 2 == 0 else "different"
        page.get_by_label("Same speaker" if answer == "same" else "Different speakers").check()
        return {"answer": answer}
    ratings = {}
    for j, slider in enumerate(page.locator("#samples input[type=range]").all()):
        value = (17 * (k + 1) + 31 * j) % 101
        slider.fill(str(value))
        ratings[slider.get_attribute("data-stimulus")] = value
    return {"ratings": ratings}


def run_listener(page, kind, listener, tmp_path):
    page.fill("#listener", listener)
    page.click("#start-btn")
    n = page.evaluate("window.listeningTest.data.trials.length")
    given, heard = [], set()
    for k in range(n):
        trial_id = page.evaluate("window.listeningTest.data.trials[window.listeningTest.state.order[%d]].id" % k)
        heard |= {a for a in page.locator("#samples audio").evaluate_all("els => els.map(e => e.dataset.stimulus)")}
        given.append((trial_id, answer_page(page, kind, k)))
        page.click("#next")
    assert page.is_visible("#finish")
    saved = {}
    for ext in ("json", "csv"):
        with page.expect_download() as dl:
            page.click(f"#download-{ext}")
        saved[ext] = tmp_path / dl.value.suggested_filename
        dl.value.save_as(saved[ext])
    assert page.text_content("#message") == ""
    return given, heard, saved


@pytest.mark.parametrize("kind", ["mos", "ab-speaker", "mushra"])
def test_a_complete_run_plays_every_stimulus_and_downloads_answers_the_evaluator_loads(browser, audio_tree,
                                                                                      pair_tree, tmp_path, kind):
    audio, real = pair_tree if kind == "ab-speaker" else audio_tree
    test = export_listening_test(audio, tmp_path / "test", kind=kind, reference_dir=real, seed=5,
                                 pairs_per_type=1, progress=False)
    page, problems = open_page(browser, test)
    assert page.title() and not problems
    given, heard, saved = run_listener(page, kind, "Ana María", tmp_path)
    manifest = load_manifest(test.out)
    assert heard == set(manifest["stimuli"])  # every stimulus was on some page, and played to its end there
    assert not problems, problems
    page.close()

    answers = json.loads(saved["json"].read_text())
    assert answers["test_id"] == test.test_id and answers["listener"] == "Ana María"
    expected_order = [manifest["trials"][i]["id"] for i in presentation_order(5, "Ana María", len(manifest["trials"]))]
    assert [t for t, _ in given] == expected_order  # the page's seeded order is the documented one
    by_trial = {}
    for r in answers["responses"]:
        by_trial.setdefault(r["trial"], []).append(r)
    for position, (trial_id, g) in enumerate(given, 1):
        rows = by_trial[trial_id]
        assert all(r["position"] == position and r["plays"] >= 1 for r in rows)
        if kind == "mos":
            assert rows[0]["rating"] == g["rating"]
        elif kind == "ab-speaker":
            trial = next(t for t in manifest["trials"] if t["id"] == trial_id)
            assert (rows[0]["answer"], rows[0]["truth"]) == (g["answer"], trial["truth"])
            assert rows[0]["correct"] == (g["answer"] == trial["truth"])
        else:
            assert {r["stimulus"]: r["rating"] for r in rows} == g["ratings"]

    summary = listening_results([saved["json"], saved["csv"]], test=test.out)
    assert summary["sessions"] == 1 and summary["listeners"] == 1  # JSON and CSV of one session count once
    if kind == "ab-speaker":
        n_correct = sum(r["correct"] for r in answers["responses"])
        assert sum(round(r["accuracy"] * r["n"]) for r in summary["rows"]) == n_correct
    else:
        from statistics import mean

        for row in summary["rows"]:
            mine = [r["rating"] for r in answers["responses"] if r["system"] == row["system"]]
            assert row["mean"] == pytest.approx(mean(mine)) and row["n"] == len(mine)


def test_an_incomplete_run_is_refused_with_a_message(browser, audio_tree, tmp_path):
    audio, real = audio_tree
    test = export_listening_test(audio, tmp_path / "test", kind="mos", reference_dir=real, seed=1, progress=False)
    page, problems = open_page(browser, test)
    page.click("#start-btn")
    assert "name" in page.text_content("#start-msg")  # no listener name: the test does not start
    assert page.is_hidden("#trial")
    page.fill("#listener", "bo")
    page.click("#start-btn")
    answer_page(page, "mos", 0)  # the first page is done, the others are skipped
    page.click("#next")
    page.get_by_label("3 ").check()  # rated without listening
    n = page.evaluate("window.listeningTest.data.trials.length")
    for _ in range(n - 1):
        page.click("#next")
    downloads = []
    page.on("download", lambda d: downloads.append(d))
    page.click("#download-json")
    page.click("#download-csv")
    page.wait_for_timeout(300)
    message = page.text_content("#message")
    assert downloads == []
    assert "not complete" in message and f"{n - 1} page(s)" in message and "not played" in message, message
    assert not problems, problems
    page.close()


def test_a_page_without_embedded_audio_plays_the_files_beside_it(browser, audio_tree, tmp_path):
    audio, _ = audio_tree
    test = export_listening_test(audio, tmp_path / "test", kind="mos", embed=False, max_per_system=1, progress=False)
    assert "data:audio" not in test.page.read_text()
    page, problems = open_page(browser, test)
    page.fill("#listener", "cy")
    page.click("#start-btn")
    answer_page(page, "mos", 0)
    assert not problems, problems
    page.close()


PLAY_LABELLED = """async (labels) => {
  const els = Array.from(document.querySelectorAll('#samples audio')).filter((a) => labels.includes(a.dataset.label));
  return await Promise.all(els.map((a) => new Promise((resolve) => {
    a.addEventListener('ended', () => resolve(a.dataset.label), {once: true});
    setTimeout(() => resolve(null), 15000);
    a.playbackRate = 4;
    a.play().catch(() => resolve(null));
  })));
}"""

MARKS = """() => Object.fromEntries(Array.from(document.querySelectorAll('#samples .sample')).map(
  (row) => [row.querySelector('audio').dataset.label, row.querySelector('.mark').textContent]))"""


def test_mushra_the_labelled_reference_and_the_hidden_one_are_each_played_themselves(browser, audio_tree, tmp_path):
    audio, real = audio_tree
    test = export_listening_test(audio, tmp_path / "test", kind="mushra", reference_dir=real, max_per_system=1,
                                 progress=False)
    page, problems = open_page(browser, test)
    page.fill("#listener", "di")
    page.click("#start-btn")
    trial = page.evaluate("window.listeningTest.data.trials[0]")
    labels = page.locator("#samples audio").evaluate_all("els => els.map(e => [e.dataset.label, e.dataset.stimulus])")
    hidden = [label for label, sid in labels if sid == trial["reference"] and label != "Reference"]
    others = [label for label, sid in labels if sid != trial["reference"]]
    assert len(hidden) == 1 and len(others) == 2 and ["Reference", trial["reference"]] in labels

    downloads = []
    page.on("download", lambda d: downloads.append(d))

    def try_download():
        page.click("#next")  # the only page: to the finish page
        page.click("#download-json")
        page.wait_for_timeout(200)
        message = page.text_content("#message")
        page.click("#back")
        return message

    for slider in page.locator("#samples input[type=range]").all():
        slider.fill("40")
    assert all(page.evaluate(PLAY_LABELLED, ["Reference", *others]))
    # hearing the labelled reference neither marks the hidden one (that would reveal it) nor excuses it
    assert page.evaluate(MARKS)[hidden[0]] == "not played yet"
    message = try_download()
    assert downloads == [] and "1 sample(s) not played" in message, message
    assert page.evaluate(MARKS)[hidden[0]] == "not played yet"  # still, after the page is drawn again

    # the other way round: every sample played but not the labelled reference is refused as well
    page.close()
    page, problems = open_page(browser, test)
    page.fill("#listener", "di")
    page.click("#start-btn")
    page.on("download", lambda d: downloads.append(d))
    for slider in page.locator("#samples input[type=range]").all():
        slider.fill("40")
    assert all(page.evaluate(PLAY_LABELLED, [*hidden, *others]))
    assert page.evaluate(MARKS)["Reference"] == "not played yet"
    message = try_download()
    assert downloads == [] and "reference not played" in message and "sample(s)" not in message, message

    assert all(page.evaluate(PLAY_LABELLED, ["Reference"]))
    page.click("#next")
    with page.expect_download() as dl:
        page.click("#download-json")
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    rows = {r["stimulus"]: r for r in json.loads(saved.read_text())["responses"]}
    assert rows[trial["reference"]]["plays"] == 1  # the hidden reference's own play, not the labelled one's
    assert not problems, problems
    page.close()
