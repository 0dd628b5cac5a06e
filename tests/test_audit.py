"""The data audit (`tunetext.audit`, `tunetext data audit`) and `data.drop_flagged`, on tiny random models.

The synthetic data is separable in any model's feature space: each class writes with its own words, so
the mean-pooled embeddings of the two classes differ even in a random model, and flipped labels are the
texts whose neighbours disagree with them. Splits come as three files, so the flips are known to be in
train."""

from __future__ import annotations

import csv
import importlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from tunetext.audit.findings import Row
from tunetext.audit.labels import as_matrix, cross_fitted, label_issues
from tunetext.cli import main
from tunetext.config import AuditConfig, load_config
from tunetext.data import DataError, load_dataset
from tunetext.data.splits import Split

run_module = importlib.import_module("tunetext.audit.run")  # `tunetext.audit` is also the function

WORDS = {"spam": ["win", "prize", "cash", "claim", "voucher", "award", "urgent", "free", "winner", "txt",
                  "ringtones", "exclusive"],
         "ham": ["coffee", "dinner", "lunch", "mum", "homework", "maths", "pizza", "curry", "home", "tonight",
                 "meeting", "yesterday"]}


def _texts(label: str, n: int, rng: random.Random) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.sample(WORDS[label], 6)))
    return sorted(out)


def synthetic(folder: Path, train_per_class: int = 60, flips: int = 6, seed: int = 0) -> dict:
    """train.csv, val.csv, test.csv of two separable classes; `flips` training labels flipped (their
    texts returned); every split's texts disjoint."""
    rng = random.Random(seed)
    sizes = {"train": train_per_class, "val": 12, "test": 12}
    texts = {label: _texts(label, sum(sizes.values()), rng) for label in WORDS}
    rows: dict[str, list[tuple[str, str]]] = {}
    start = 0
    for split, n in sizes.items():
        rows[split] = [(t, label) for label in WORDS for t in texts[label][start:start + n]]
        rng.shuffle(rows[split])
        start += n
    flipped = set(rng.sample(range(len(rows["train"])), flips))
    other = {"spam": "ham", "ham": "spam"}
    rows["train"] = [(t, other[lbl] if i in flipped else lbl) for i, (t, lbl) in enumerate(rows["train"])]
    paths = {}
    for split, items in rows.items():
        paths[split] = folder / f"{split}.csv"
        with open(paths[split], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(items)
    return {"paths": paths, "flipped": {rows["train"][i][0] for i in flipped}, "rows": rows}


def overrides(data: dict, model: Path, **more) -> dict:
    return {"data.validation": str(data["paths"]["val"]), "data.test": str(data["paths"]["test"]),
            "model.max_length": 32, **more}


def test_flips_injected_into_separable_data_are_found(tmp_path, tiny_bert):
    data = synthetic(tmp_path)
    result = run_module.audit(str(data["paths"]["train"]), model=str(tiny_bert), output=tmp_path / "out",
                              overrides=overrides(data, tiny_bert), progress=False)
    flagged = {i.row.text for i in result.label_issues if i.row.split == "train"}
    found = flagged & data["flipped"]
    precision, recall = len(found) / max(1, len(flagged)), len(found) / len(data["flipped"])
    assert recall >= 0.8 and precision >= 0.6, (precision, recall, flagged, data["flipped"])
    # each flagged flip is offered its true label back
    truth = {"spam": "ham", "ham": "spam"}
    for issue in result.label_issues:
        if issue.row.text in data["flipped"]:
            assert issue.suggested == truth[issue.row.label] and issue.confidence > 0.5
    assert [i.quality for i in result.label_issues if i.row.split == "train"] == sorted(
        i.quality for i in result.label_issues if i.row.split == "train")
    assert result.summary["folds"] == 5 and result.summary["sizes"] == {"train": 120, "val": 24, "test": 24}


def test_the_cross_fitting_scores_each_text_with_a_head_that_never_saw_it():
    """Two classes apart in a 2-d feature space, three labels flipped: out-of-fold probabilities give each
    flipped row its features' class, as no head saw its flipped label with its features, and cleanlab
    flags exactly those rows, with the class they came from as the suggestion."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1.5, 0.6, (40, 2)), rng.normal(1.5, 0.6, (40, 2))])
    truth = np.array([0] * 40 + [1] * 40)
    flips = [3, 7, 50]
    y = truth.copy()
    y[flips] = 1 - y[flips]
    scores = cross_fitted(x, y, 2, "single_label", AuditConfig(), seed=0)
    assert scores.folds == 5 and scores.probabilities.shape == (80, 2)
    assert (scores.probabilities[flips, truth[flips]] > 0.8).all()
    rows = [Row("train", i, f"t{i}", "ab"[label]) for i, label in enumerate(y)]
    issues = label_issues(rows, y, scores.probabilities, ["a", "b"], "single_label")
    assert sorted(i.row.row for i in issues) == flips
    assert all(i.suggested == "ab"[truth[i.row.row]] for i in issues)


def test_multi_label_issues_are_found_one_label_at_a_time():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (120, 3))
    y = [tuple(j for j in range(2) if x[i, j] > 0) for i in range(120)]
    y[5] = tuple(sorted(set(range(2)) - set(y[5])))  # both labels of one row flipped
    matrix = as_matrix(y, 2, "multi_label")
    scores = cross_fitted(x * 4, matrix, 2, "multi_label", AuditConfig(), seed=0)
    rows = [Row("train", i, f"t{i}", "") for i in range(120)]
    issues = label_issues(rows, matrix, scores.probabilities, ["a", "b"], "multi_label")
    assert issues and issues[0].row.row == 5


class Poisoned(list):
    """Labels that fail the test the moment anything reads them."""

    def _fail(self, *args, **kwargs):
        raise AssertionError("the audit read a test label")

    __getitem__ = __iter__ = __len__ = __contains__ = _fail


def test_the_audit_never_reads_test_labels(tmp_path, tiny_bert, monkeypatch):
    data = synthetic(tmp_path)
    real = run_module.load_dataset

    def poisoned(*args, **kwargs):
        dataset = real(*args, **kwargs)
        dataset.test = Split(dataset.test.texts, Poisoned())
        return dataset

    monkeypatch.setattr(run_module, "load_dataset", poisoned)
    result = run_module.audit(str(data["paths"]["train"]), model=str(tiny_bert), output=tmp_path / "out",
                              overrides=overrides(data, tiny_bert), progress=False)
    assert result.summary["sizes"]["test"] == 24 and not result.summary["test_labels_read"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "findings.jsonl").read_text().splitlines()]
    assert all(r["given_label"] == "" for r in rows if r["split"] == "test")


def test_findings_round_trip_drops_and_relabels_exactly_the_marked_rows(tmp_path, tiny_bert):
    data = synthetic(tmp_path)
    out = tmp_path / "out"
    result = run_module.audit(str(data["paths"]["train"]), model=str(tiny_bert), output=out,
                              overrides=overrides(data, tiny_bert), progress=False)
    with open(out / "findings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(run_module.COLUMNS)
    issues = [r for r in rows if r["kind"] == "label_issue" and r["split"] == "train"]
    assert len(issues) >= 3 and len(issues) == sum(i.row.split == "train" for i in result.label_issues)
    drop, relabel = issues[0], issues[1]
    drop["action"] = "drop"
    relabel["action"], relabel["new_label"] = "relabel", relabel["suggested_label"]
    issues[2]["action"] = "keep"
    with open(out / "findings.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=run_module.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    config = load_config(overrides={"data.source": str(data["paths"]["train"]),
                                    **overrides(data, tiny_bert)})
    before = load_dataset(config.data)
    after = load_dataset(config.data.model_copy(update={"drop_flagged": str(out / "findings.csv")}))
    names = after.label_names
    assert len(after.train) == len(before.train) - 1 and drop["text"] not in after.train.texts
    changed = [t for t, a in zip(after.train.texts, after.train.labels, strict=True)
               if a != before.train.labels[before.train.texts.index(t)]]
    assert changed == [relabel["text"]]
    assert names[after.train.labels[after.train.texts.index(relabel["text"])]] == relabel["suggested_label"]
    assert after.val.texts == before.val.texts and after.test.fingerprint() == before.test.fingerprint()
    summary = after.summary()
    assert summary["train"]["sha256"] != before.summary()["train"]["sha256"]
    assert summary["drop_flagged"]["dropped"] == {"train": 1, "val": 0}
    assert summary["drop_flagged"]["relabelled"] == {"train": 1, "val": 0}
    assert len(summary["drop_flagged"]["sha256"]) == 64
    assert any("dropped 1 train" in line for line in after.report)


def _findings(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=run_module.COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in run_module.COLUMNS})
    return path


def test_a_bad_findings_file_is_one_error_naming_every_line(tmp_path):
    data = synthetic(tmp_path)
    train_text = data["rows"]["train"][0][0]
    test_text = data["rows"]["test"][0][0]
    path = _findings(tmp_path / "findings.csv", [
        {"split": "train", "text": train_text, "action": "drop"},  # line 2: fine
        {"split": "train", "text": "no such text", "action": "drop"},  # line 3
        {"split": "test", "text": test_text, "action": "drop"},  # line 4
        {"split": "train", "text": train_text, "action": "relabel", "new_label": "eggs"},  # line 5
        {"split": "val", "text": data["rows"]["val"][0][0], "action": "burn"},  # line 6
        {"split": "train", "text": "unmarked rows are skipped", "action": ""},  # line 7
    ])
    config = load_config(overrides={"data.source": str(data["paths"]["train"]),
                                    "data.validation": str(data["paths"]["val"]),
                                    "data.test": str(data["paths"]["test"]), "data.drop_flagged": str(path)})
    with pytest.raises(DataError) as err:
        load_dataset(config.data)
    message = str(err.value)
    assert "4 problem(s)" in message
    for line, words in ((3, "no train text"), (4, "test row"), (5, "'eggs' is not a label"),
                        (6, "unknown action 'burn'")):
        assert f"line {line}: " in message and words in message, (line, message)
    assert "line 2" not in message and "line 7" not in message


def test_a_findings_file_without_its_columns_or_at_all_is_an_error(tmp_path):
    data = synthetic(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nx,y\n")
    base = {"data.source": str(data["paths"]["train"])}
    with pytest.raises(DataError, match="no column.*split.*action.*new_label"):
        load_dataset(load_config(overrides={**base, "data.drop_flagged": str(bad)}).data)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(load_config(overrides={**base, "data.drop_flagged": str(tmp_path / "gone.csv")}).data)


def test_the_cli_writes_the_four_files_and_a_table(tmp_path, tiny_bert, capsys):
    data = synthetic(tmp_path)
    out = tmp_path / "audit"
    status = main(["data", "audit", str(data["paths"]["train"]), "--model", str(tiny_bert), "--folds", "3",
                   "--output", str(out), "--quiet", "--drop-leaks", f"data.validation={data['paths']['val']}",
                   f"data.test={data['paths']['test']}", "model.max_length=32", "audit.show=3"])
    printed = capsys.readouterr().out
    assert status == 0
    assert {p.name for p in out.iterdir()} >= {"findings.csv", "findings.jsonl", "audit.json", "audit.html"}
    summary = json.loads((out / "audit.json").read_text())
    assert summary["folds"] == 3 and summary["model"] == str(tiny_bert) and summary["cpu"]["model"]
    assert set(summary["seconds"]) >= {"prepare", "embed", "label_issues", "duplicates", "outliers", "total"}
    assert "suspected label errors" in printed and "findings.csv" in printed
    shown = [line for line in printed.splitlines() if line.startswith("  train") or line.startswith("  val")]
    assert 0 < len(shown) <= 3 + summary["counts"]["outliers"]
    # The folder is the audit's own: a second audit replaces it; a folder of someone else's is refused.
    assert main(["data", "audit", str(data["paths"]["train"]), "--model", str(tiny_bert), "--output",
                 str(out), "--quiet", f"data.validation={data['paths']['val']}",
                 f"data.test={data['paths']['test']}", "model.max_length=32"]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["data", "audit", str(data["paths"]["train"]), "--model", str(tiny_bert), "--output",
                 str(tmp_path / "mine"), "--quiet"]) == 2
    assert "not written by tunetext data audit" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_regression_data_skips_label_issues_and_says_why(tmp_path, tiny_bert):
    path = tmp_path / "numbers.csv"
    rng = random.Random(0)
    texts = _texts("spam", 40, rng) + _texts("ham", 40, rng)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((t, f"{i / 7:.3f}") for i, t in enumerate(texts))
    result = run_module.audit(str(path), model=str(tiny_bert), output=tmp_path / "out", progress=False,
                              overrides={"data.task": "regression", "model.max_length": 32})
    assert result.label_issues == [] and "regression" in result.summary["label_issues"]["skipped"]
    lines = run_module.findings_table(result, 3)
    assert any("none looked for" in line for line in lines)


def test_a_near_copy_of_a_test_text_in_train_is_a_leak_and_drop_leaks_marks_the_training_copy(tmp_path,
                                                                                                tiny_bert):
    data = synthetic(tmp_path)
    test_text, label = data["rows"]["test"][0]
    copy = test_text.upper() + " !!"  # another text to the data cleaning, the same one normalised
    with open(data["paths"]["train"], "a", newline="") as f:
        csv.writer(f).writerow([copy, label])
    # a random tiny model puts every text close to every other: only the normalised copy is wanted here
    settings = overrides(data, tiny_bert, **{"audit.near_duplicate_similarity": 1.0})
    result = run_module.audit(str(data["paths"]["train"]), model=str(tiny_bert), output=tmp_path / "out",
                              overrides=settings, drop_leaks=True, progress=False)
    leaks = [g for g in result.duplicates if g.leaks]
    assert len(leaks) == 1 and {r.text for r in leaks[0].rows} == {copy, test_text}
    assert result.summary["counts"]["leaking_groups"] == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "findings.jsonl").read_text().splitlines()]
    marked = [r for r in rows if r["action"]]
    assert [(r["kind"], r["split"], r["text"], r["action"]) for r in marked] == [
        ("near_duplicate", "train", copy, "drop")]
    # the marked file trains without the training copy; the test text stays
    config = load_config(overrides={"data.source": str(data["paths"]["train"]), **overrides(data, tiny_bert),
                                    "data.drop_flagged": str(tmp_path / "out" / "findings.csv")})
    dataset = load_dataset(config.data)
    assert copy not in dataset.train.texts and test_text in dataset.test.texts


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_embeddings_pool_as_the_family_says_whatever_the_padding(family, tiny_family, tmp_path):
    """Encoders: the mean of the last hidden state over the text's tokens; decoders: the hidden state at its
    last token. Each text embedded in a padded batch equals it embedded alone, at unit length; a text longer
    than model.max_length is counted as cut."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tunetext.audit.embed import embed_splits

    folder = tiny_family(family)
    texts = {"train": ["win cash now", "coffee at home tonight"],
             "val": ["ok"], "test": ["urgent prize " * 40]}
    config = load_config(overrides={"model.name": str(folder), "model.max_length": 16})
    embedded = embed_splits(texts, config, progress=False)
    assert embedded.truncated == {"train": 0, "val": 0, "test": 1}
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    for split, items in texts.items():
        for i, text in enumerate(items):
            ids = tokenizer(text, truncation=True, max_length=16, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**ids).last_hidden_state[0]
            alone = hidden[-1] if family == "gpt2" else hidden.mean(0)
            alone = (alone / alone.norm()).numpy()
            assert np.allclose(embedded.vectors[split][i], alone, atol=1e-4), (split, i)
