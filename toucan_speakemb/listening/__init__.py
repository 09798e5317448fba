"""Listening tests of generated voices: export a self-contained web page (and a webMUSHRA config) from a
folder of audio, and summarise the answers listeners send back.

    from toucan_speakemb.listening import export_listening_test, listening_results
    test = export_listening_test("voices_out/", "mos_test/", kind="mos", reference_dir="real/", seed=0)
    summary = listening_results(["answers_a.json", "answers_b.csv"], test="mos_test/")
"""

from toucan_speakemb.listening.export import export_listening_test, load_manifest  # noqa: F401
from toucan_speakemb.listening.results import listening_results  # noqa: F401
