from tunetext import Classifier


def test_trained_run_predicts_label_names(trained_run):
    preds = Classifier.load(trained_run).predict(["WINNER! claim your 1000 prize", "see you at 7pm"])
    assert {p.label for p in preds} <= {"ham", "spam"}
    for p in preds:
        assert abs(sum(p.probabilities.values()) - 1) < 1e-5
