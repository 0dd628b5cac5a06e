"""Every measured figure in the docs says which committed result it comes from, and quotes it correctly.

A reference follows the figure it backs, on the same line (in a table, in the same cell):

    C is 1.45x [benchmarks/results/train_speed.json: ratios.B_over_C] faster than B

- The key is a dotted path into the JSON file: a segment names a key of an object (keys may hold spaces
  or dashes; a key that itself holds dots, such as `train.learning_rate`, is matched whole) or indexes
  a list.
- `[FILE: a.b / c.d]` backs a figure that is the quotient of two values the file holds, for a ratio it
  does not store itself (a speed-up from two timings, say).
- The figure is the last number before the reference in its line or cell, after any earlier reference;
  numbers in inline code (`--epochs 3`) are not figures. It must equal the value rounded to the decimals
  it shows. "2,933.1" reads as 2933.1; "97.66%" is the value x100 when the value is at most 1 (a fraction);
  "2.42x" is the value as it is; "22.71M" is the value in millions.

The lint: outside code, the figures most likely to be measurements must each be the figure of a
reference. Three patterns, because these docs quote their results in three shapes: a decimal ratio
`2.42x` (speed-ups, throughput), a decimal percentage `97.66%` (accuracies), and an accuracy-like
fraction `0.9766` (0.9 and two or more decimals: accuracy and F1 on these tasks). Plain integers,
settings, targets such as `8x` and dataset sizes are not linted: most of them are not measurements. No
allowlist has been needed.

Pure text processing: no torch, no model fixtures, milliseconds.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]
)

REFERENCE = re.compile(r"`?\[(benchmarks/results/[^\]\s:]+\.json):\s*([^\]]+?)\s*\]`?")
NUMBER = re.compile(
    r"(?<![\w.,])(?P<sign>-?)(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?P<exp>[eE][-+]?\d+)?"
    r"(?P<suffix>%|x|M)?(?!\w)"
)
INLINE_CODE = re.compile(r"`[^`]*`")
# The lint's patterns: a decimal ratio, a decimal percentage, an accuracy-like fraction (0.9 and at
# least two more decimals). Each one, where it is not the figure of a reference, is reported.
MEASURED = re.compile(r"(?<![\w.,])(?:\d+\.\d+x(?!\w)|\d+\.\d+%|0\.9\d{2,}(?![\d]))")


def _segments(text: str):
    """(line number, text) of each line outside fenced code, split into its cells if it is a table row."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.lstrip().startswith("|"):
            for cell in re.split(r"(?<!\\)\|", line):
                yield number, cell
        else:
            yield number, line


def _blank_code(text: str) -> str:
    """The text with inline code replaced by spaces (so positions are kept)."""
    return INLINE_CODE.sub(lambda m: " " * len(m.group()), text)


def _resolve(node, parts: list[str]):
    if not parts:
        return node
    if isinstance(node, dict):
        for n in range(len(parts), 0, -1):  # longest first: a key may itself hold dots
            key = ".".join(parts[:n])
            if key in node:
                try:
                    return _resolve(node[key], parts[n:])
                except KeyError:
                    continue
    elif isinstance(node, list) and parts[0].isdigit() and int(parts[0]) < len(node):
        return _resolve(node[int(parts[0])], parts[1:])
    raise KeyError(".".join(parts))


def reference_value(root: Path, file: str, key: str) -> float:
    """The number `[file: key]` stands for; `key` may be `a.b / c.d`, the quotient of two values.

    Raises ValueError saying what is wrong: no such file, no such key, not a number.
    """
    path = root / file
    if not path.is_file():
        raise ValueError(f"{file} does not exist")
    data = json.loads(path.read_text())
    values = []
    for part in key.split(" / "):
        try:
            value = _resolve(data, part.strip().split("."))
        except KeyError:
            raise ValueError(f"{file} has no key {part.strip()!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{file}: {part.strip()} is {value!r}, not a number")
        values.append(float(value))
    if len(values) == 1:
        return values[0]
    if len(values) != 2 or values[1] == 0:
        raise ValueError(f"{file}: {key!r} is not one key or a quotient 'a / b' with b nonzero")
    return values[0] / values[1]


def figure_matches(figure: re.Match, value: float) -> tuple[bool, float]:
    """Whether the quoted figure is `value` rounded to the decimals it shows; also the value as quoted."""
    digits = figure["int"].replace(",", "") + (figure["frac"] or "") + (figure["exp"] or "")
    quoted = float(figure["sign"] + digits)
    if figure["suffix"] == "%" and abs(value) <= 1:
        value *= 100
    elif figure["suffix"] == "M":
        value /= 1e6
    decimals = len(figure["frac"] or ".") - 1
    scale = 10.0 ** (int(figure["exp"][1:]) if figure["exp"] else 0)
    tolerance = 0.5 * 10.0**-decimals * scale
    return abs(value - quoted) <= tolerance * (1 + 1e-9), value


def check_references(text: str, root: Path, name: str) -> tuple[int, list[str]]:
    """The number of references in `text`, and a message for each that does not resolve or match."""
    count, problems = 0, []
    for line, cell in _segments(text):
        start = 0
        for ref in REFERENCE.finditer(cell):
            count += 1
            file, key = ref.group(1), ref.group(2)
            figures = list(NUMBER.finditer(_blank_code(cell[start : ref.start()])))
            start = ref.end()
            where = f"{name}:{line}: [{file}: {key}]"
            if re.match(r"\w", cell[ref.end() : ref.end() + 1]):
                problems.append(f"{where}: text runs on after it; a suffix such as x or % goes on the figure")
            try:
                value = reference_value(root, file, key)
            except ValueError as e:
                problems.append(f"{where}: {e}")
                continue
            if not figures:
                problems.append(f"{where}: no figure before it (the value is {value!r})")
                continue
            ok, expected = figure_matches(figures[-1], value)
            if not ok:
                problems.append(f"{where}: quotes {figures[-1].group()!r}, but the file holds {expected!r}")
    return count, problems


def unreferenced_figures(text: str, name: str) -> list[str]:
    """A message for each lint-pattern figure outside code that is not the figure of a reference."""
    problems = []
    for line, cell in _segments(text):
        start = 0
        pieces = []
        for ref in REFERENCE.finditer(cell):
            pieces.append((cell[start : ref.start()], True))
            start = ref.end()
        pieces.append((cell[start:], False))
        for piece, referenced in pieces:
            piece = _blank_code(piece)
            figures = list(NUMBER.finditer(piece))
            backed = figures[-1].span() if referenced and figures else None
            for m in MEASURED.finditer(piece):
                if backed is None or not (backed[0] <= m.start() < backed[1]):
                    problems.append(f"{name}:{line}: {m.group()!r} has no reference right after it")
    return problems


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_references_resolve_and_match_the_figures_quoted(path):
    _, problems = check_references(path.read_text(), ROOT, _name(path))
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=_name)
def test_no_measured_figure_without_a_reference(path):
    problems = unreferenced_figures(path.read_text(), _name(path))
    assert not problems, (
        "\nthese figures need a [benchmarks/results/FILE.json: key] reference right after them "
        "(or removal):\n" + "\n".join(problems)
    )


def test_the_docs_do_carry_references():
    # If the reference pattern stopped matching, every check above would pass on nothing.
    total = sum(check_references(p.read_text(), ROOT, _name(p))[0] for p in DOCS)
    assert total >= 50


# The checker itself, on small texts and a result file of its own.


@pytest.fixture
def results(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    data = {
        "ratios": {"B_over_C": 1.4471},
        "cache minilm-l6": {"speedup": 2.4246},
        "ways": {"A": {"wall_seconds": 2933.08, "test_accuracy": 0.991279}, "C": {"wall_seconds": 163.5}},
        "params": {"train.learning_rate": 8.138e-05},
        "tried": [{"l2": 0.01, "score": 0.4669}, {"l2": 0.001, "score": 0.88204}],
        "trainable": 22713986,
        "state": "COMPLETE",
    }
    (tmp_path / "benchmarks" / "results" / "r.json").write_text(json.dumps(data))
    return tmp_path


def _problems(text, root):
    return check_references(text, root, "doc.md")[1]


def test_checker_accepts_figures_rounded_as_shown(results):
    text = (
        "C is 1.45x [benchmarks/results/r.json: ratios.B_over_C] faster, or 1.447x "
        "[benchmarks/results/r.json: ratios.B_over_C]; A took 2,933.1 s [benchmarks/results/r.json: "
        "ways.A.wall_seconds] at **99.13%** [benchmarks/results/r.json: ways.A.test_accuracy] "
        "(0.9913 [benchmarks/results/r.json: ways.A.test_accuracy]), 17.9x "
        "[benchmarks/results/r.json: ways.A.wall_seconds / ways.C.wall_seconds], 2.42x "
        "`[benchmarks/results/r.json: cache minilm-l6.speedup]`, lr 8.1e-5 "
        "[benchmarks/results/r.json: params.train.learning_rate], 0.88 [benchmarks/results/r.json: "
        "tried.1.score] with `--epochs 3`, 22.71M [benchmarks/results/r.json: trainable]\n"
        "| 0.47 [benchmarks/results/r.json: tried.0.score] | 2 |\n"
    )
    assert check_references(text, results, "doc.md") == (11, [])


def test_checker_catches_a_figure_that_differs_from_the_file(results):
    problems = _problems("A got 0.9912 [benchmarks/results/r.json: ways.A.test_accuracy]\n", results)
    assert problems == ["doc.md:1: [benchmarks/results/r.json: ways.A.test_accuracy]: "
                        "quotes '0.9912', but the file holds 0.991279"]
    # Rounded the wrong way, too many decimals, a percentage of the wrong value, a quotient misquoted:
    for wrong in (
        "1.44x [benchmarks/results/r.json: ratios.B_over_C]",
        "1.4472x [benchmarks/results/r.json: ratios.B_over_C]",
        "99.12% [benchmarks/results/r.json: ways.A.test_accuracy]",
        "17.8x [benchmarks/results/r.json: ways.A.wall_seconds / ways.C.wall_seconds]",
        "2,933.2 s [benchmarks/results/r.json: ways.A.wall_seconds]",
    ):
        assert len(_problems(f"x {wrong}\n", results)) == 1, wrong


def test_checker_takes_the_last_figure_of_the_cell_before_the_reference(results):
    # In a table the figure must sit in the reference's own cell; a figure in the cell before does not count.
    assert _problems("| 1.45x | [benchmarks/results/r.json: ratios.B_over_C] |\n", results) == [
        "doc.md:1: [benchmarks/results/r.json: ratios.B_over_C]: no figure before it (the value is 1.4471)"
    ]
    # The last number before the reference is the figure, not an earlier one.
    assert _problems("1.45x on 3 cores [benchmarks/results/r.json: ratios.B_over_C]\n", results)


def test_checker_catches_missing_files_keys_and_non_numbers(results):
    cases = {
        "1.0 [benchmarks/results/nope.json: a]": "benchmarks/results/nope.json does not exist",
        "1.0 [benchmarks/results/r.json: ratios.A_over_C]": "has no key 'ratios.A_over_C'",
        "1.0 [benchmarks/results/r.json: tried.2.score]": "has no key 'tried.2.score'",
        "1.0 [benchmarks/results/r.json: cache minilm-l6]": "is {'speedup': 2.4246}, not a number",
        "1.0 [benchmarks/results/r.json: state]": "is 'COMPLETE', not a number",
        "1.0 [benchmarks/results/r.json: ratios.B_over_C / nope]": "has no key 'nope'",
    }
    for text, message in cases.items():
        problems = _problems(text + "\n", results)
        assert len(problems) == 1 and message in problems[0], (text, problems)


def test_checker_catches_a_suffix_written_after_the_reference(results):
    problems = _problems("C is 1.45 [benchmarks/results/r.json: ratios.B_over_C]x faster\n", results)
    assert len(problems) == 1 and "text runs on after it" in problems[0]


def test_checker_ignores_fenced_code(results):
    assert _problems("```\n0.1 [benchmarks/results/nope.json: a]\n```\n", results) == []


def test_lint_flags_measured_figures_without_a_reference():
    text = (
        "C is 2.42x faster, at 97.66% and 0.9766 accuracy.\n"
        "| 0.9766 | 1.2x [benchmarks/results/r.json: a] |\n"
        "2.42x [benchmarks/results/r.json: a] but 2.72x here, "
        "and 2.35x (3 runs) [benchmarks/results/r.json: b]\n"
    )
    assert unreferenced_figures(text, "doc.md") == [
        "doc.md:1: '2.42x' has no reference right after it",
        "doc.md:1: '97.66%' has no reference right after it",
        "doc.md:1: '0.9766' has no reference right after it",
        "doc.md:2: '0.9766' has no reference right after it",
        "doc.md:3: '2.72x' has no reference right after it",
        "doc.md:3: '2.35x' has no reference right after it",
    ]


def test_lint_leaves_code_targets_and_integers_alone():
    text = (
        "```\nprint(0.9766, '2.42x')\n```\n"
        "`0.9766` and `2.42x` in code; targets 8x and 3x; 99% of texts; lr 1e-4; 0.5 s; version 0.1.0\n"
        "1.45x [benchmarks/results/r.json: a] and **97.66%** `[benchmarks/results/r.json: b]`\n"
    )
    assert unreferenced_figures(text, "doc.md") == []


def test_rounding_tolerance_is_half_a_unit_of_the_last_decimal():
    figure = NUMBER.search("0.9688")
    assert figure_matches(figure, 0.96875)[0]  # a tie rounds either way
    assert figure_matches(figure, 0.968849)[0]
    assert not figure_matches(figure, 0.968749)[0]
    assert not figure_matches(figure, 0.96886)[0]
    assert math.isclose(figure_matches(NUMBER.search("96.88%"), 0.96875)[1], 96.875)
    assert figure_matches(NUMBER.search("143"), 143.427)[0]
    assert not figure_matches(NUMBER.search("143"), 143.5001)[0]
