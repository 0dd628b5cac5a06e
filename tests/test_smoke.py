import json

from tunetext import Classifier, load_config
from tunetext.data import load_dataset


def test_trained_run_learned_the_tiny_data(learned_bert_run):
    """The tiny data is templated, so a model that learns anything gets its held-out test split right;
    the control is the same model before fine-tuning (its new head), scored by the same code."""
    metrics = json.loads((learned_bert_run / "metrics.json").read_text())
    before, after = metrics["before_finetune"]["test"], metrics["test"]
    assert before["macro_f1"] <= 0.6  # untrained: chance, or one class for everything
    assert after["macro_f1"] >= 0.9 and after["accuracy"] >= 0.9

    clf = Classifier.load(learned_bert_run)
    test = load_dataset(load_config(learned_bert_run / "tunetext.yaml").data).test
    preds = clf.predict(test.texts)
    right = sum(p.label == clf.label_names[y] for p, y in zip(preds, test.labels, strict=True))
    assert right / len(test) == after["accuracy"]  # the run's score is the Classifier's own answers
    # New texts in the data's styles, none of them in it.
    spam, ham = clf.predict(["WINNER! claim your 1000 prize now", "see you at 7pm"])
    assert (spam.label, ham.label) == ("spam", "ham")
    for p in (spam, ham):
        assert p.score > 0.8 and abs(sum(p.probabilities.values()) - 1) < 1e-5
