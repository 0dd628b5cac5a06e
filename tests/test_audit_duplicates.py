"""Near-duplicates and leakage, and outliers, on synthetic embeddings (numpy only, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from tunetext.audit import duplicates as dup
from tunetext.audit.duplicates import leaks_to_drop, near_duplicates, normalized_key, similar_pairs
from tunetext.audit.findings import DuplicateGroup, Row
from tunetext.audit.outliers import fit_classes, majority_script, outliers, text_checks

DIM = 32


def _rows(split: str, texts: list[str], label: str = "a") -> list[Row]:
    return [Row(split, i, t, label) for i, t in enumerate(texts)]


def _random(n: int, seed: int) -> np.ndarray:
    """Random directions: in 32 dimensions two of them have cosine well below 0.9."""
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _near(v: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    """A vector at cosine about 0.99 to `v`, at another scale (embeddings need not be unit length)."""
    return (3.0 * v + noise * np.linalg.norm(v) / np.sqrt(DIM)
            * np.random.default_rng(seed).standard_normal(v.shape)).astype(np.float32)


def _data(n_train: int = 12) -> tuple[dict[str, list[Row]], dict[str, np.ndarray]]:
    """Distinct random texts; train 0 has a near-copy at test 1, train 3 one at train 7, and val 0 is
    "Free CASH now!!" where train 5 is "free cash now"."""
    train_t = [f"train text number {i}" for i in range(n_train)]
    train_t[5] = "free cash now"
    val_t, test_t = ["Free CASH now!!", "a validation text"], ["a test text", "leaked paraphrase", "third"]
    train, val, test = _random(n_train, 1), _random(2, 2), _random(3, 3)
    test[1] = _near(train[0], 4)
    train[7] = _near(train[3], 5)
    val[0] = _near(train[5], 6)
    rows = {"train": _rows("train", train_t), "val": _rows("val", val_t), "test": _rows("test", test_t)}
    return rows, {"train": train, "val": val, "test": test}


def _members(group: DuplicateGroup) -> set[tuple[str, int]]:
    return {(r.split, r.row) for r in group.rows}


def test_normalized_key_folds_case_punctuation_and_spacing_but_keeps_digits():
    assert normalized_key("Free CASH now!!") == normalized_key("free   cash, now") == "free cash now"
    assert normalized_key("ＦＲＥＥ cash") == "free cash"  # full-width letters (NFKC)
    assert normalized_key("rated 1/10") != normalized_key("rated 9/10")
    assert normalized_key("!!! ...") == ""


def test_near_duplicates_finds_copies_within_and_across_splits_and_puts_leaks_first():
    rows, embeddings = _data()
    groups = near_duplicates(rows, embeddings, threshold=0.95)
    found = {(g.how, frozenset(_members(g))) for g in groups}
    assert ("normalized", frozenset({("train", 5), ("val", 0)})) in found
    assert ("embedding", frozenset({("train", 0), ("test", 1)})) in found
    assert ("embedding", frozenset({("train", 3), ("train", 7)})) in found
    # The "free cash" pair is also close in embedding space, but that group would only repeat the normalised
    # one, so it is not listed twice; nothing else is grouped.
    assert len(groups) == 3
    assert [g.leaks for g in groups] == [True, True, False]
    embedding_leak = next(g for g in groups if g.how == "embedding" and g.leaks)
    assert 0.95 <= embedding_leak.similarity < 1.0
    assert next(g for g in groups if g.how == "normalized").similarity == 1.0


def test_distinct_texts_are_not_grouped_and_empty_splits_are_fine():
    rows = {"train": _rows("train", [f"text {i}" for i in range(40)]), "val": [], "test": []}
    embeddings = {"train": _random(40, 7), "val": np.zeros((0, DIM), np.float32),
                  "test": np.zeros((0, DIM), np.float32)}
    assert near_duplicates(rows, embeddings, threshold=0.9) == []
    assert near_duplicates({"train": []}, {"train": np.zeros((0, DIM), np.float32)}, 0.9) == []


def test_misaligned_embeddings_are_refused():
    rows, embeddings = _data()
    embeddings["val"] = embeddings["val"][:1]
    with pytest.raises(ValueError, match="'val' has 2 rows"):
        near_duplicates(rows, embeddings, threshold=0.95)


def test_chunked_pairs_equal_brute_force(monkeypatch):
    rng = np.random.default_rng(0)
    # Clusters of near-identical vectors, so there are many pairs above the threshold and across chunks.
    centres = rng.standard_normal((15, DIM))
    x = centres[rng.integers(0, 15, 200)] + 0.3 * rng.standard_normal((200, DIM))
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    i, j, s = similar_pairs(unit, 0.9, keep=1000, chunk=17)
    full = unit @ unit.T
    bi, bj = np.nonzero(np.triu(full >= 0.9, k=1))
    assert len(bi) > 200  # the check has something to compare
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == set(zip(bi.tolist(), bj.tolist(), strict=True))
    np.testing.assert_allclose(s, full[i, j], rtol=1e-5)
    # And chunking does not change the groups.
    rows = {"train": _rows("train", [f"t{k}" for k in range(200)])}
    small = near_duplicates(rows, {"train": x.astype(np.float32)}, 0.9)
    assert len(small) > 5
    monkeypatch.setattr(dup, "CHUNK", 7)
    assert near_duplicates(rows, {"train": x.astype(np.float32)}, 0.9) == small


def test_keep_caps_the_pairs_of_each_text():
    unit = np.ones((30, 4), np.float32) / 2.0  # all identical: 435 pairs
    i, _, _ = similar_pairs(unit, 0.99, keep=3, chunk=8)
    assert np.bincount(i).max() == 3


def test_a_chain_does_not_become_one_giant_group():
    # Points on an arc, each at cosine 0.9996 to the next: connected components would join all 60 though the
    # ends are orthogonal; leader clustering keeps every member near its group's first text.
    angles = np.linspace(0, np.pi / 2, 60)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    groups = near_duplicates({"train": _rows("train", [f"t{k}" for k in range(60)])}, {"train": x}, 0.99)
    assert len(groups) >= 4
    assert max(len(g.rows) for g in groups) <= 15
    assert all(g.similarity >= 0.96 for g in groups)  # within two thresholds' reach of the first
    rows = [r for g in groups for r in g.rows]
    assert len(rows) == len(set(rows))  # a text is in at most one group
    assert len(rows) == 60  # and every text with a neighbour is in one


def test_a_held_out_text_near_a_taken_training_text_still_ends_in_a_leak():
    # On a line of angles: train 0 (0.08) leads, taking train 1 (0.16), train 2 (0.0) and test 0 (-0.08)...
    # test 1 (0.30) is near train 1 only, which is already taken when test 1's turn comes. It joins train
    # 1's group (one hop: its cosine to the leader is below the threshold) rather than being left out.
    angle = np.array([0.08, 0.16, -0.08, 0.0, 0.30])
    x = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    rows = {"train": _rows("train", ["a", "b", "c"]), "test": _rows("test", ["d", "e"])}
    threshold = float(np.cos(0.165))
    groups = near_duplicates(rows, {"train": x[:3], "test": x[3:]}, threshold)
    assert len(groups) == 1 and groups[0].leaks
    assert _members(groups[0]) == {("train", 0), ("train", 1), ("train", 2), ("test", 0), ("test", 1)}
    assert groups[0].rows[0] == rows["train"][0]
    assert groups[0].similarity == pytest.approx(np.cos(0.22), abs=1e-3) and groups[0].similarity < threshold


def test_texts_with_a_neighbour_across_splits_lead_first():
    # Points on a plane (tangent to the sphere): b - a - t - u - v in a line, w beside u, neighbours 1 apart.
    # By neighbour count alone test u would lead first and take test t, hiding the leak t <-> train a.
    plane = {"b": (0, 0), "a": (1, 0), "t": (2, 0), "u": (3, 0), "v": (4, 0), "w": (3, 1)}
    x = np.array([[1.0, 0.05 * px, 0.05 * py] for px, py in plane.values()], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = x @ x.T
    near = [(0, 1), (1, 2), (2, 3), (3, 4), (3, 5)]
    far = [(p, q) for p in range(6) for q in range(p + 1, 6) if (p, q) not in near]
    threshold = float(min(cos[p, q] for p, q in near) + max(cos[p, q] for p, q in far)) / 2
    assert min(cos[p, q] for p, q in near) > threshold > max(cos[p, q] for p, q in far)
    rows = {"train": _rows("train", ["b", "a"]), "test": _rows("test", ["t", "u", "v", "w"])}
    groups = near_duplicates(rows, {"train": x[:2], "test": x[2:]}, threshold)
    assert [_members(g) for g in groups] == [{("train", 0), ("train", 1), ("test", 0)},
                                             {("test", 1), ("test", 2), ("test", 3)}]
    assert groups[0].leaks


def test_groups_are_capped():
    x = np.ones((120, DIM), np.float32)  # 120 copies of one vector under different texts
    groups = near_duplicates({"train": _rows("train", [f"t{k}" for k in range(120)])}, {"train": x}, 0.99)
    assert max(len(g.rows) for g in groups) == dup.MAX_GROUP
    assert sum(len(g.rows) for g in groups) == 120


def test_leaks_to_drop_returns_only_training_members_of_leaking_groups():
    rows, embeddings = _data()
    groups = near_duplicates(rows, embeddings, threshold=0.95)
    dropped = leaks_to_drop(groups)
    assert {(r.split, r.row) for r in dropped} == {("train", 0), ("train", 5)}
    assert all(r.split == "train" for r in dropped)
    held = DuplicateGroup((Row("val", 0, "x", "a"), Row("test", 0, "x", "a")), "normalized", 1.0)
    assert leaks_to_drop([held]) == []  # val <-> test is not a training leak


def test_a_pair_across_chunk_borders_is_found():
    # A mid-sized set through several chunks (512 rows each): the pair is 1,099 rows apart.
    x = _random(1100, 9)
    x[1099] = _near(x[0], 10)
    groups = near_duplicates({"train": _rows("train", [f"t{k}" for k in range(1100)])}, {"train": x}, 0.95)
    assert [_members(g) for g in groups] == [{("train", 0), ("train", 1099)}]


# --- outliers -----------------------------------------------------------------------------------------------

def _classes(n: int, seed: int) -> tuple[list[Row], np.ndarray, list[str]]:
    """Two tight classes around two random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, DIM))
    labels = ["spam" if k % 2 else "ham" for k in range(n)]
    x = centres[[k % 2 for k in range(n)]] + 0.4 * rng.standard_normal((n, DIM))
    rows = [Row("train", k, f"an ordinary message number {k}", labels[k]) for k in range(n)]
    return rows, x.astype(np.float32), labels


def test_outliers_rank_an_off_distribution_vector_and_an_all_digit_text_first():
    train_rows, train_x, labels = _classes(60, 0)
    test_x = train_x[:6].copy()
    test_rows = [Row("test", k, f"a normal test text {k}", labels[k]) for k in range(6)]
    test_x[2] = np.random.default_rng(5).standard_normal(DIM)  # far from both classes
    test_rows[4] = Row("test", 4, "0800 123 456 789", labels[4])  # near its class, but digits only
    every = np.concatenate([train_x, test_x])
    found = outliers(train_rows + test_rows, every, train_rows, train_x, labels, 5)
    top = {(o.row.split, o.row.row): o for o in found[:2]}
    assert set(top) == {("test", 2), ("test", 4)}
    assert "far from every class" in top[("test", 2)].reason
    assert "closest is '" in top[("test", 2)].reason and "typical" in top[("test", 2)].reason
    assert "letters (mostly digits)" in top[("test", 4)].reason
    assert found[0].score >= found[-1].score
    assert len(outliers(test_rows, test_x, train_rows, train_x, labels, 1)) == 1


def test_outliers_multi_label_counts_a_text_for_each_label():
    x = _random(8, 11)
    labels = ["a", "a", "a|b", "a|b", "b|c", "c", "c", ""]
    classes = fit_classes(x, labels)
    assert classes is not None and classes.names == ["a", "b", "c"]  # "a|b" is never a class
    b = x[[2, 3, 4]] / np.linalg.norm(x[[2, 3, 4]], axis=1, keepdims=True)
    expected = b.mean(axis=0) / np.linalg.norm(b.mean(axis=0))
    np.testing.assert_allclose(classes.centres[1], expected, rtol=1e-5)


def test_text_checks_say_why():
    assert text_checks("", "LATIN") == ["empty"]
    assert text_checks("?!", "LATIN") == ["no letters or digits, only 2 symbols"]
    assert text_checks("k.", "LATIN") == ["nearly empty: only 1 letter or digit"]
    assert text_checks("Ok", "LATIN") == []  # a short message, not an empty one
    assert text_checks("see https://example.com/a/b/c/d", "LATIN")[0].startswith("mostly URLs")
    assert text_checks("$$$ ### %%% !!! win", "LATIN") == ["20% letters (mostly symbols)"]
    assert text_checks("Привет, как дела?", "LATIN") == [
        "mostly Cyrillic letters (100%); the training data is mostly Latin"]
    assert text_checks("A perfectly ordinary sentence.", "LATIN") == []
    assert majority_script(["hello", "мир"]) == "LATIN"
