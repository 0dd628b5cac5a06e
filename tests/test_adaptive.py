"""The defaults that adapt to the data: what they choose for each shape of data, and that explicit
settings win."""

import pytest

from tunetext import adaptive
from tunetext.adaptive import DataShape, resolve
from tunetext.config import load_config


def shape(classes: int, rows: int, rarest: int | None = None) -> DataShape:
    """`rows` training labels over `classes` classes, even except for one class of `rarest` examples."""
    labels = [0] * rarest if rarest is not None else []
    rest = rows - len(labels)
    first = 1 if rarest is not None else 0
    labels += [first + i % (classes - first) for i in range(rest)]
    return DataShape.of(labels)


def chosen(data: DataShape, *overrides: str) -> dict:
    config, choices = resolve(load_config(overrides=list(overrides)), data)
    return {"epochs": config.train.epochs, "class_weights": config.train.class_weights,
            "patience": config.train.early_stopping_patience, "explained": [c.key for c in choices]}


@pytest.mark.parametrize(("classes", "rows", "epochs", "patience"), [
    (2, 20_000, 3, 2),     # 625 steps an epoch: three passes are more than enough
    (2, 3_600, 3, 2),      # the demo's shape: 113 steps an epoch, 3 epochs as before
    (50, 20_000, 4, 2),    # 2,000 steps wanted (40 per class), 625 an epoch
    (50, 6_500, 10, 2),    # R52's shape: about ten passes for 2,000 steps
    (2, 200, 20, 5),       # 7 steps an epoch: capped at 20 epochs, early stopping a quarter of that
    (50, 200, 20, 5),
])
def test_epochs_and_patience_follow_classes_and_rows(classes, rows, epochs, patience):
    got = chosen(shape(classes, rows))
    assert (got["epochs"], got["patience"]) == (epochs, patience)
    assert "train.epochs" in got["explained"] and "train.early_stopping_patience" in got["explained"]


def test_steps_per_epoch_counts_processes_and_accumulation():
    assert adaptive.steps_per_epoch(3_600, 32) == 113
    assert adaptive.steps_per_epoch(3_600, 32, accumulation=2) == 57
    assert adaptive.steps_per_epoch(3_600, 32, processes=2) == 56
    # With two processes every epoch has half the steps, so more epochs reach the same step count.
    config = load_config()
    two = resolve(config, shape(50, 6_500), processes=2)[0].train.epochs
    assert two == 20 and resolve(config, shape(50, 6_500))[0].train.epochs == 10


@pytest.mark.parametrize(("rarest", "weights"), [(None, "none"), (100, "none"), (70, "none"), (50, "sqrt"),
                                                 (2, "sqrt")])
def test_loss_weights_only_for_imbalanced_classes(rarest, weights):
    # 2,000 rows over 4 classes: one of `rarest`, the others share the rest (650 each with 50: 13x).
    assert chosen(shape(4, 2_000, rarest))["class_weights"] == weights


def test_explicit_settings_win():
    got = chosen(shape(50, 200, rarest=1), "train.epochs=2", "train.class_weights=none",
                 "train.early_stopping_patience=null")
    # data.task and train.metric were left at auto: they are explained as chosen
    assert got == {"epochs": 2, "class_weights": "none", "patience": None,
                   "explained": ["data.task", "train.metric", "data.long_text"]}


def test_a_resolved_run_config_matches_what_it_was_resolved_from():
    given = load_config(overrides=["train.learning_rate=3e-5"])
    saved, _ = resolve(given, shape(50, 6_500))
    assert saved != given and adaptive.same_run(saved, given)
    assert not adaptive.same_run(saved, load_config())  # a different learning rate: another run
    assert not adaptive.same_run(saved, load_config(overrides=["train.learning_rate=3e-5",
                                                               "train.epochs=3"]))


def test_loss_weights_average_one_over_the_training_examples():
    import numpy as np

    from tunetext.train import _class_weights

    labels = [0] * 90 + [1] * 9 + [2]
    for mode, ratio in (("balanced", 90.0), ("sqrt", 90 ** 0.5)):
        w = _class_weights(labels, 3, mode).numpy()
        assert np.isclose(w[np.array(labels)].mean(), 1.0)
        assert np.isclose(w[2] / w[0], ratio)
    assert _class_weights(labels, 3, "none") is None


@pytest.mark.parametrize(("longer", "mode"), [(0, "truncate"), (1, adaptive.LONG_TEXT_WHEN_LONG),
                                               (3_000, adaptive.LONG_TEXT_WHEN_LONG)])
def test_long_texts_choose_how_they_are_read(longer, mode):
    labels = [i % 2 for i in range(6_000)]
    config, choices = resolve(load_config(), DataShape.of(labels, longer=longer))
    assert config.data.long_text == mode
    assert any(c.key == "data.long_text" and c.value == mode for c in choices)
    # Asked for, it is kept, long texts or not.
    assert resolve(load_config(overrides=["data.long_text=chunks"]), DataShape.of(labels, longer=0)
                   )[0].data.long_text == "chunks"


def test_auto_long_text_resolved_in_a_saved_config_still_matches():
    given = load_config()
    saved, _ = resolve(given, DataShape.of([0, 1] * 100, longer=50))
    assert saved.data.long_text == adaptive.LONG_TEXT_WHEN_LONG and adaptive.same_run(saved, given)


def test_patience_counts_evaluations_when_evaluating_within_epochs():
    # 6,500 rows in 50 classes: 10 epochs of 204 steps; evaluating every 51 steps is 4 evaluations an epoch.
    config, choices = resolve(load_config(overrides=["train.eval_every=51"]), shape(50, 6_500))
    assert config.train.epochs == 10 and config.train.early_stopping_patience == 10
    assert "4 evaluations" in next(c.reason for c in choices if c.key == "train.early_stopping_patience")
