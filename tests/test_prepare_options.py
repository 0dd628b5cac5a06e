"""Data preparation options: cleaning (also at prediction time), undersampling, augmentation, and the
report line each step writes."""

from __future__ import annotations

import random
import shutil
from collections import Counter

import numpy as np
import pytest
import yaml

from tunetext import Classifier, load_config
from tunetext.config import ConfigError, DataConfig
from tunetext.data import RawSplit, clean_text, load_dataset, prepare
from tunetext.data.resample import augment_text
from tunetext.runs import CONFIG

ALL_CLEANING = DataConfig(lowercase=True, strip_urls=True, strip_markup=True)


def raw(texts, labels, origin="d.csv"):
    return RawSplit(origin, list(texts), list(labels), list(range(2, 2 + len(texts))), "line")


# --- clean_text ---------------------------------------------------------------------------------------

def test_cleaning_is_off_by_default_and_only_whitespace_is_normalised():
    config = DataConfig()
    assert not (config.lowercase or config.strip_urls or config.strip_markup)
    assert config.balance == "none" and config.augment == 0
    messy = "  <b>WIN</b>  now &amp; see http://x.co/a  "
    assert clean_text(messy, config) == clean_text(messy) == "<b>WIN</b> now &amp; see http://x.co/a"


@pytest.mark.parametrize(("option", "text", "expected"), [
    ("lowercase", "Hello WORLD <B>", "hello world <b>"),
    ("strip_urls", "see https://x.co/a?b=1, www.foo.org. or ftp://f.net/x!", "see , . or !"),
    ("strip_urls", "HTTP://EXAMPLE.COM/Path ok", "ok"),
    ("strip_markup", "<p>Fish &amp; <b>chips</b></p><br/>&#39;yes&#39;&nbsp;no", "Fish & chips 'yes' no"),
    ("strip_markup", '<a href="http://t.co">Click</a><script>x="<b>"</script><!-- c -->here', "Click here"),
    ("strip_markup", "a < b and c > d, x <3 y, 1 <= 2", "a < b and c > d, x <3 y, 1 <= 2"),
])
def test_each_cleaning_option(option, text, expected):
    assert clean_text(text, DataConfig(**{option: True})) == expected


def test_markup_goes_before_urls_and_entities_are_decoded_once():
    # The URL in the tag's attribute goes with the tag; "&amp;lt;" is the text "&lt;", not "<".
    assert clean_text('<a href="http://x.co">Go</a> &amp;lt;', ALL_CLEANING) == "go &lt;"


# --- cleaning in preparation --------------------------------------------------------------------------

def test_cleaning_runs_before_dedupe_in_every_split_and_reports_counts():
    train = raw(["Hello <b>World</b>", "hello world", "FREE prize http://win.co", "free prize",
                 "see you later", "call me", "ok then", "WIN cash now", "win cash now www.x.org",
                 "lunch at 1?", "Meeting moved", "<i></i> http://empty.only"],
                ["ham", "ham", "spam", "spam", "ham", "ham", "ham", "spam", "spam", "ham", "ham", "spam"])
    test = raw(["<p>Lunch AT 2?</p>", "lunch at 2?", "Prize inside http://a.b"], ["ham", "ham", "spam"],
               origin="test.csv")
    # rare_class_min=1: this test pins the cleaning lines; the rare-class warning has its own tests
    config = ALL_CLEANING.model_copy(update={"val_fraction": 0.2, "rare_class_min": 1})
    dataset = prepare({"train": train, "test": test}, config, seed=0)

    everything = dataset.train.texts + dataset.val.texts + dataset.test.texts
    assert all(t == t.lower() and "<" not in t and "http" not in t and "www" not in t for t in everything)
    assert sorted(dataset.test.texts) == ["lunch at 2?", "prize inside"]
    assert len(everything) == len(set(everything)) == 8 + 2
    assert dataset.report == [
        "d.csv: strip_markup removed 4 HTML tags/entities from 2 of 12 texts",
        "d.csv: strip_urls removed 3 URLs from 3 of 12 texts",
        "d.csv: lowercase changed 4 of 12 texts",
        "d.csv: dropped 1 texts left empty by cleaning (lines 13)",
        "d.csv: removed 3 exact duplicate texts, kept 8 (3 of them differed from the kept copy before "
        "cleaning)",
        "test.csv: strip_markup removed 2 HTML tags/entities from 1 of 3 texts",
        "test.csv: strip_urls removed 1 URLs from 1 of 3 texts",
        "test.csv: lowercase changed 2 of 3 texts",
        "test.csv: removed 1 exact duplicate texts, kept 2 (1 of them differed from the kept copy before "
        "cleaning)",
    ]


def test_without_cleaning_the_same_data_keeps_its_near_duplicates():
    dataset = prepare({"train": raw(["Hi there", "hi there", "a", "b", "c", "d", "e", "f", "g", "h"],
                                    ["x", "x", "y", "y", "x", "y", "x", "y", "x", "y"])},
                      DataConfig(val_fraction=0.2, test_fraction=0.2, rare_class_min=1), seed=0)
    assert dataset.report == []
    assert sum(len(s) for s in dataset.splits().values()) == 10


# --- the same cleaning at prediction time -------------------------------------------------------------

@pytest.fixture(scope="module")
def cleaning_run(trained_run, tmp_path_factory):
    """The tiny trained run, its saved config switched to every cleaning option."""
    run = tmp_path_factory.mktemp("cleaning") / "run"
    shutil.copytree(trained_run, run)
    saved = yaml.safe_load((run / CONFIG).read_text())
    saved["data"].update(lowercase=True, strip_urls=True, strip_markup=True)
    (run / CONFIG).write_text(yaml.safe_dump(saved))
    return run


MESSY = ["<b>CONGRATULATIONS</b> you WON 1000 pounds &amp; a PRIZE, txt CLAIM www.win.co",
         "SEE YOU AT 8 <br> http://maps.example/x"]


def test_classifier_cleans_as_the_run_was_trained(trained_run, cleaning_run):
    plain, cleaning = Classifier.load(trained_run), Classifier.load(cleaning_run)
    assert cleaning.config.data.lowercase and not plain.config.data.lowercase
    assert cleaning.clean(MESSY) == [clean_text(t, cleaning.config.data) for t in MESSY]
    assert cleaning.clean(MESSY)[1] == "see you at 8"
    # The cleaning classifier on messy text is the plain one on the cleaned text ...
    np.testing.assert_allclose(cleaning.predict_proba(MESSY),
                               plain.predict_proba([clean_text(t, ALL_CLEANING) for t in MESSY]), atol=1e-6)
    # ... and not the plain one on the messy text (so the cleaning really happened).
    assert not np.allclose(cleaning.predict_proba(MESSY), plain.predict_proba(MESSY), atol=1e-4)
    assert cleaning.predict(MESSY[0]).probabilities == pytest.approx(
        plain.predict(clean_text(MESSY[0], ALL_CLEANING)).probabilities, abs=1e-6)


def test_a_text_that_cleaning_empties_is_an_error_saying_so(cleaning_run):
    with pytest.raises(ValueError, match=r"position\(s\) 1 only became empty by this run's text cleaning"):
        Classifier.load(cleaning_run).predict(["fine text", "https://only.a/url"])


def test_serving_cleans_as_prediction_does_and_one_emptied_text_fails_alone(cleaning_run):
    from tunetext.serve.batching import Engine

    clf = Classifier.load(cleaning_run)
    engine = Engine(clf)
    results = engine(engine.measure([MESSY[0], "https://only.a/url", MESSY[1]]))
    np.testing.assert_allclose(np.stack([results[0].probabilities, results[2].probabilities]),
                               clf.predict_proba([MESSY[0], MESSY[1]]), atol=1e-6)
    assert results[1].probabilities is None and "text cleaning" in results[1].error
    assert results[0].error is None and results[2].error is None


# --- balancing ----------------------------------------------------------------------------------------

def imbalanced(n_major=30, n_minor=6):
    texts = [f"ham message {i}" for i in range(n_major)] + [f"spam message {i}" for i in range(n_minor)]
    return raw(texts, ["ham"] * n_major + ["spam"] * n_minor)


def test_undersampling_balances_train_only_seeded():
    config = DataConfig(balance="undersample", val_fraction=0.2, test_fraction=0.2, rare_class_min=1)
    dataset = prepare({"train": imbalanced()}, config, seed=3)
    baseline = prepare({"train": imbalanced()}, DataConfig(val_fraction=0.2, test_fraction=0.2), seed=3)
    assert Counter(baseline.train.labels) == {0: 18, 1: 4}
    assert Counter(dataset.train.labels) == {0: 4, 1: 4}
    assert set(dataset.train.texts) < set(baseline.train.texts)
    assert dataset.val == baseline.val and dataset.test == baseline.test
    assert dataset.report == ["balanced train by undersampling to 4 per class: 22 -> 8 examples "
                              "(was ham 18, spam 4)"]
    again = prepare({"train": imbalanced()}, config, seed=3)
    other = prepare({"train": imbalanced()}, config, seed=4)
    assert again.train == dataset.train
    assert other.train != dataset.train


# --- augmentation -------------------------------------------------------------------------------------

SENTENCE = "the quick brown fox jumps over the lazy dog again"


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


@pytest.mark.parametrize("seed", range(5))
def test_augment_text_operations(seed):
    words = SENTENCE.split()
    swapped = augment_text(SENTENCE, "swap", 0.2, random.Random(seed)).split()
    assert sorted(swapped) == sorted(words) and swapped != words
    deleted = augment_text(SENTENCE, "delete", 0.3, random.Random(seed)).split()
    assert 1 <= len(deleted) < len(words)
    assert is_subsequence(deleted, words)
    inserted = augment_text(SENTENCE, "insert", 0.2, random.Random(seed)).split()
    assert len(inserted) == len(words) + 2
    assert Counter(inserted) - Counter(words) and not Counter(words) - Counter(inserted)
    assert set(inserted) == set(words)
    assert augment_text("single", "delete", 0.5, random.Random(seed)) == "single"


def test_augmentation_adds_copies_to_train_only_seeded_and_reports_them(tiny_csv):
    base = load_dataset(DataConfig(source=str(tiny_csv)))
    config = DataConfig(source=str(tiny_csv), augment=2, augment_prob=0.2)
    dataset = load_dataset(config)
    assert dataset.val == base.val and dataset.test == base.test
    assert dataset.train.texts[:len(base.train)] == base.train.texts
    added = list(zip(dataset.train.texts[len(base.train):], dataset.train.labels[len(base.train):],
                     strict=True))
    assert 0.8 * 2 * len(base.train) < len(added) <= 2 * len(base.train)
    assert len(set(dataset.train.texts)) == len(dataset.train)  # no copy repeats a text
    assert not set(dataset.train.texts) & (set(base.val.texts) | set(base.test.texts))
    # Each copy keeps the label of a training text made of the same words.
    vocab_by_label: dict[int, set[str]] = {}
    for text, label in zip(base.train.texts, base.train.labels, strict=True):
        vocab_by_label.setdefault(label, set()).update(text.split())
    assert all(set(text.split()) <= vocab_by_label[label] for text, label in added)
    line = dataset.report[-1]
    assert line.startswith(f"augmented train: added {len(added)} copies (swap ")
    counts = [int(part.split()[-1]) for part in line.split("(")[1].split(")")[0].split(", ")]
    assert sum(counts) == len(added) and all(c > 0 for c in counts)
    assert line.endswith(f"train now {len(dataset.train)} examples")
    assert load_dataset(config).train == dataset.train
    assert load_dataset(config.model_copy(update={"seed": 7})).train.texts[-len(added):] != \
        dataset.train.texts[-len(added):]


def test_augmentation_uses_only_the_chosen_operations(tiny_csv):
    config = DataConfig(source=str(tiny_csv), augment=1, augment_ops=["delete"], augment_prob=0.3)
    dataset = load_dataset(config)
    n = len(load_dataset(DataConfig(source=str(tiny_csv))).train)
    assert "(delete " in dataset.report[-1] and "swap" not in dataset.report[-1]
    originals = list(zip(dataset.train.texts[:n], dataset.train.labels[:n], strict=True))
    assert len(dataset.train) > n
    for copy, label in zip(dataset.train.texts[n:], dataset.train.labels[n:], strict=True):
        words = copy.split()
        assert any(lbl == label and len(words) < len(o.split()) and is_subsequence(words, o.split())
                   for o, lbl in originals)


def test_augmentation_never_copies_a_validation_or_test_text():
    # "b a" is in test; swapping train's "a b" would make it.
    train = raw(["a b", "c d", "e f g", "h i j"], ["x", "y", "x", "y"])
    test = raw(["b a", "d c", "k l", "m n"], ["x", "y", "x", "y"], origin="test.csv")
    val = raw(["o p", "q r"], ["x", "y"], origin="val.csv")
    config = DataConfig(augment=3, augment_ops=["swap"])
    dataset = prepare({"train": train, "validation": val, "test": test}, config, seed=0)
    assert "b a" not in dataset.train.texts and "d c" not in dataset.train.texts
    assert "equal to a validation/test text" in dataset.report[-1]


def test_config_rejects_bad_augmentation_settings():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"data.augment_ops": ["swap", "shuffle"], "data.augment": -1,
                               "data.balance": "oversample"})
    text = str(err.value)
    assert "data.augment_ops.1" in text and "data.augment:" in text and "data.balance" in text
