from lmforge.curate import filters as F
from lmforge.curate.decontam import DecontaminationFilter
from lmforge.curate.pii import PIIScrubber

from .webdata import PROSE, doc

GOOD = "\n\n".join([PROSE, "The weather was mild and the fields were green with the first crops "
                    "of the season, so farmers were hopeful about the harvest. Prices at the market "
                    "had risen a little since spring, but most families still bought fresh bread "
                    "and vegetables there every week. A new bus line now connects the village with "
                    "the hospital, which makes life easier for older people who no longer drive."])


def _check(filt, text, url=None):
    return filt(doc(text, url)), dict(filt.stats)


def test_base_owns_stats_and_reasons():
    f = F.LengthFilter(min_chars=10, max_chars=20)
    for text in ["short", "just the right size", "x" * 50]:
        f(doc(text))
    assert f.stats == {"in": 3, "kept": 1, "dropped.too_short": 1, "dropped.too_long": 1}


def test_url_filter_domains_subdomains_and_words(tmp_path):
    (tmp_path / "block.txt").write_text("# spam\nbad.example\n")
    f = F.URLFilter(blocked_domains=["evil.test"], blocked_words=["casino"],
                    blocklist_file=str(tmp_path / "block.txt"))
    assert f(doc("x", "http://news.example.org/a")) is not None
    assert f(doc("x", None)) is not None
    for url in ["http://evil.test/", "http://www.evil.test/x", "http://bad.example/p"]:
        assert f(doc("x", url)) is None
    assert f(doc("x", "http://best-casino.example.com/")) is None
    assert f.stats["dropped.blocked_domain"] == 3 and f.stats["dropped.blocked_word"] == 1


def test_language_filter_keeps_english_and_annotates():
    f = F.LanguageFilter(languages=["en"], min_score=0.65)
    kept = f(doc(GOOD))
    assert kept is not None and kept.metadata["language"] == "en"
    assert kept.metadata["language_score"] > 0.65
    assert f(doc("Der Ausschuss traf sich am Dienstag, um den Haushalt für das kommende Jahr "
                 "zu besprechen. Die Mitglieder waren sich einig.")) is None
    assert f.stats["dropped.wrong_language"] == 1


def test_language_filter_per_language_threshold():
    text = "Le comité s'est réuni mardi pour discuter du budget de l'année prochaine."
    assert F.LanguageFilter(languages=["fr"], thresholds={"fr": 0.5})(doc(text)) is not None
    strict = F.LanguageFilter(languages=["fr"], thresholds={"fr": 1.01})
    assert strict(doc(text)) is None and strict.stats["dropped.low_language_score"] == 1


def test_gopher_repetition():
    f = F.GopherRepetitionFilter()
    assert f(doc(GOOD)) is not None
    assert f(doc("\n\n".join(["Buy cheap pills now."] * 10 + [PROSE]))) is None
    assert f(doc(" ".join(["click here to win a free prize today"] * 30))) is None
    reasons = {k for k in f.stats if k.startswith("dropped.")}
    assert reasons & {"dropped.dup_para_frac", "dropped.dup_para_char_frac"}
    assert len(reasons) == 2


def test_gopher_quality_rules():
    f = F.GopherQualityFilter()
    assert f(doc(GOOD)) is not None
    cases = {
        "gopher_short_doc": "Too short to be a document.",
        "gopher_avg_word_length": " ".join(["a b c d e of to"] * 20),
        "gopher_symbol_word_ratio": " ".join(["#tag the and of word"] * 20),
        "gopher_bullet_lines": "\n".join(["- item with the and of words here"] * 20),
        "gopher_alpha_words": " ".join(["123 456 789 the and"] * 20),
        "gopher_stop_words": " ".join(["apple banana cherry grapes melon"] * 20),
    }
    for reason, text in cases.items():
        assert f(doc(text)) is None, reason
        assert f.stats[f"dropped.{reason}"] == 1, (reason, f.stats)


def test_c4_cleans_lines_and_drops_documents():
    f = F.C4Filter()
    d = f(doc(GOOD + "\nPlease enable JavaScript to view this site properly.\nMenu\n"
              "This site uses cookies to improve your experience."))
    assert d is not None
    assert "JavaScript" not in d.text and "Menu" not in d.text and "cookies" not in d.text
    assert f(doc(GOOD + "\nLorem ipsum dolor sit amet.")) is None
    assert f(doc("One sentence only. Two sentences here.")) is None
    assert F.C4Filter(filter_curly_bracket=True)(doc(GOOD + " function() { }")) is None
    assert f.stats["dropped.c4_lorem_ipsum"] == 1 and f.stats["dropped.c4_too_few_sentences"] == 1


def test_fineweb_rules():
    f = F.FineWebFilter()
    assert f(doc(GOOD)) is not None
    assert f(doc("\n".join(["Home.", "About us.", "Products.", "Contact.", "Login."] * 4) + "\n" + PROSE)) is None
    assert f(doc("\n".join(f"A long line number {i} without any final punctuation at all"
                           for i in range(20)))) is None
    dup_line = "This exact line appears many times in the document text."
    assert f(doc("\n".join([PROSE] + [dup_line] * 3))) is None
    assert {k for k in f.stats if k.startswith("dropped.")} == {
        "dropped.fineweb_short_line_ratio", "dropped.fineweb_line_punct_ratio",
        "dropped.fineweb_char_dup_ratio"}


def test_decontamination_drops_documents_with_eval_ngrams(tmp_path):
    question = ("A train leaves the station at nine in the morning travelling at sixty miles per "
                "hour towards a city two hundred miles away")
    (tmp_path / "eval.jsonl").write_text('{"question": "%s", "answer": "42"}\n' % question)
    f = DecontaminationFilter([str(tmp_path / "eval.jsonl")], ngram_words=13)
    assert f(doc(GOOD)) is not None
    leaked = GOOD + " Quiz: A TRAIN leaves the station at nine, in the morning travelling at sixty miles per hour."
    assert f(doc(leaked)) is None and f.stats["dropped.eval_overlap"] == 1


def test_pii_placeholders():
    scrub = PIIScrubber()
    text = ("Mail jane.doe@example.com or call +1 (415) 555-0132 / 020 7946 0958. Server 8.8.8.8 "
            "and 2001:4860:4860::8888 but keep 192.168.1.10 and 127.0.0.1. "
            "key AKIAIOSFODNN7EXAMPLE token ghp_abcdefghijklmnopqrstuvwxyz0123456789 "
            "api_key = 'zq8Xk2LmN4pR7sT9' released 2024-01-15 version 2.4.58.")
    out = scrub.scrub(text)
    for secret in ["jane.doe@example.com", "555-0132", "7946 0958", "8.8.8.8", "2001:4860",
                   "AKIAIOSFODNN7EXAMPLE", "ghp_", "zq8Xk2LmN4pR7sT9"]:
        assert secret not in out, secret
    for kept in ["192.168.1.10", "127.0.0.1", "2024-01-15", "2.4.58", "api_key = '"]:
        assert kept in out, kept
    assert out.count("<EMAIL>") == 1 and out.count("<IP_ADDRESS>") == 2
    assert out.count("<PHONE>") == 2 and out.count("<SECRET>") == 3
    assert scrub.stats["replaced.secret"] == 3


def test_quality_model_trains_and_filters(tmp_path):
    from lmforge.curate.quality import QualityModelFilter, train_quality_model

    good = [PROSE, GOOD, "The museum opened a new exhibition about the history of the river and "
            "the people who built the first bridges across it."]
    bad = ["buy cheap pills now best price click here", "win money casino bonus free spins now",
           "hot deals discount click subscribe now free"]
    path = tmp_path / "quality.npz"
    train_quality_model(good, bad, str(path))
    f = QualityModelFilter(str(path), min_score=0.5)
    kept = f(doc("The council met to discuss the history of the library and the budget."))
    assert kept is not None and kept.metadata["quality_score"] > 0.5
    assert f(doc("click here for cheap casino bonus pills now")) is None
    assert f.stats["dropped.low_quality_score"] == 1
