"""The course kit: answer checks that the notebooks' exercises call, and the student and instructor copies.

    python -m s2r2lib.course student|instructor [--out DIR]

A check takes the student's answer. A right answer prints why it is right; a wrong one raises :class:`NotYet`,
whose message is the exercise's hint and never the answer, e.g. ``course.check_ap_one_positive(lambda r: 1 / r)``.

The copies follow fastbook's generated "clean" notebooks: one source (``notebooks/``), copies written by a script
into ``build/student/`` or ``build/instructor/``, never edited by hand. The student copy drops every cell tagged
``solution``, replaces nbgrader's ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` regions by a stub, and clears
all outputs; the exercises, their hints and the check calls stay. The instructor copy keeps the solutions and
clears the outputs.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys
from pathlib import Path

SOLUTION_TAG = "solution"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ('# your code here\nraise NotImplementedError("your answer goes here: replace these two lines with it, then run '
        'the cell")')
KINDS = ("student", "instructor")


class NotYet(AssertionError):
    """A wrong answer to an exercise; the message is its hint."""


class OverSources(ValueError):
    """Copies asked to be written over the source notebooks."""


def _judge(right: bool, hint: str, why: str) -> str:
    if not right:
        raise NotYet(f"Not yet. Hint: {hint}")
    print(f"Right. {why}")
    return why


def _scalar(value):
    """A numpy or torch scalar (a 0-d array or tensor) as the Python number or bool it holds, as a student may
    compute an answer (``(ids == ids[0]).sum() - 1``); anything else as it is."""
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def _number(check: str, name: str, value) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{check}: {name} must be a finite number, got {value!r}; replace the placeholder with "
                        f"your answer")
    return float(value)


# --- Notebook 01 ---------------------------------------------------------------------------------------------

def check_sigmoid_slope(answer, tau: float = 1.0) -> str:
    """Exercise 01.1: the slope of eq. 3's sigmoid at d = 0 for temperature ``tau``: 1 / (4 tau)."""
    answer = _number("check_sigmoid_slope", "answer", answer)
    tail = math.exp(-2 / tau)
    at_two = tail / (1 + tail) ** 2 / tau  # phi (1 - phi) / tau at a similarity difference of 2, the widest there is
    blunt = at_two > 0.01 / (4 * tau)
    return _judge(math.isclose(answer, 1 / (4 * tau), rel_tol=1e-3),
                  "the sigmoid's slope is phi (1 - phi) / tau; at d = 0, phi = 1/2.",
                  f"At tau = {tau:g} the slope falls from its value at a tie to {at_two:.3g} at a similarity "
                  f"difference of 2: " + ("every pair in [-2, 2] still gets gradient, so the smoothed AP is "
                                          "blurred." if blunt else "only near-ties get gradient, so the smoothed "
                                          "AP is sharp and its gradient local."))


def check_ap_one_positive(ap) -> str:
    """Exercise 01.3: ``ap(rank)`` is the AP of a query whose only positive sits at ``rank`` (1, 2, ...)."""
    if not callable(ap):
        raise TypeError(f"check_ap_one_positive: ap must be a function of the positive's rank, e.g. "
                        f"`def ap(rank): ...`, got {ap!r}")
    right = all(math.isclose(float(ap(rank)), 1 / rank, rel_tol=1e-6) for rank in range(1, 21))
    return _judge(right, "with one positive, eq. 1's sum has one term: R(i, P) = 1, and R(i, I) is its rank "
                         "among all retrieved views.",
                  "AP is the reciprocal rank of the single positive: like NT-Xent it scores one positive "
                  "against the negatives, but it only counts how many negatives outrank it, not by how much.")


# --- Notebooks 02 and 05 -------------------------------------------------------------------------------------

def check_views_per_query(images_per_batch: int, views_per_image: int, positives, negatives) -> str:
    """Exercises 02.1 and 05.2: a query's positives (K - 1) and negatives (K (B - 1)) in a batch of B x K views."""
    b, k = images_per_batch, views_per_image
    positives, negatives = (_number("check_views_per_query", name, value)
                            for name, value in (("positives", positives), ("negatives", negatives)))
    return _judge(positives == k - 1 and negatives == k * (b - 1),
                  "a query's positives are the other views of its own image (the query is in neither set); its "
                  "negatives are all the views of the other images.",
                  f"B = {b}, K = {k}: {k - 1} positive(s) and {k * (b - 1)} negatives per query, "
                  f"{b * k} queries a step.")


# --- Notebook 03 ---------------------------------------------------------------------------------------------

def check_rescaling(linear_changes: bool, knn_changes: bool) -> str:
    """Exercise 03.2: does multiplying one feature by 10 change the linear probe's predictions? kNN's?"""
    linear_changes, knn_changes = _scalar(linear_changes), _scalar(knn_changes)
    if not (isinstance(linear_changes, bool) and isinstance(knn_changes, bool)):
        raise TypeError(f"check_rescaling: answer True or False for each probe, got linear_changes="
                        f"{linear_changes!r}, knn_changes={knn_changes!r}")
    return _judge(not linear_changes and knn_changes,
                  "the linear probe standardises every feature before it fits (s2r2lib.probe.linear_probe); "
                  "cosine kNN compares directions of the raw features.",
                  "Standardising undoes any per-feature scale, so the linear probe can weigh a faint but "
                  "informative direction; cosine kNN is ruled by the features with the largest spread.")


# --- Notebook 04 ---------------------------------------------------------------------------------------------

def paper_leads(points: float = 1.0) -> dict[str, tuple[int, int]]:
    """Per baseline: (cells where S2R2's printed top-1 leads it by more than ``points``, cells with both numbers),
    over Tables 1 and 2 of the paper as transcribed in results/runs.csv."""
    from .results import paper_rows

    wide = paper_rows().pivot_table(index=["table", "dataset", "epochs"], columns="method", values="value")
    leads = {}
    for baseline in ("SimCLR", "SwAV"):
        margin = (wide["S2R2"] - wide[baseline]).dropna()
        leads[baseline] = (int((margin > points).sum()), len(margin))
    return leads


def check_stronger_claim(answer) -> str:
    """Exercise 04.1: which baseline S2R2 beats more convincingly in the paper's tables ("SimCLR" or "SwAV")."""
    if not isinstance(answer, str):
        raise TypeError(f"check_stronger_claim: answer must name a baseline, \"SimCLR\" or \"SwAV\", got {answer!r}")
    leads = paper_leads()
    share = {name: wins / cells for name, (wins, cells) in leads.items()}
    named = [name for name in leads if name.lower() in answer.lower()]
    if len(named) != 1:
        raise TypeError(f"check_stronger_claim: name one baseline, \"SimCLR\" or \"SwAV\": the one S2R2 beats more "
                        f"convincingly; {answer!r} names {' and '.join(named) if named else 'neither'}")
    return _judge(named == [max(share, key=share.get)],
                  "count, per baseline, the cells where S2R2 leads by more than one point, out of the cells that "
                  "print both numbers (Table 2 has no SwAV).",
                  "; ".join(f"S2R2 leads {name} by more than a point in {wins} of {cells} cells"
                            for name, (wins, cells) in leads.items()) + ".")


def check_forward_pass_ratio(answer) -> str:
    """Exercise 04.2: SimCLR steps (256 x 2 views) that cost the encoder forward passes of one S2R2 step (64 x 20)."""
    answer = _number("check_forward_pass_ratio", "answer", answer)
    return _judge(math.isclose(answer, 64 * 20 / (256 * 2), rel_tol=1e-3),
                  "the encoder runs once per view: count the views in one step of each method.",
                  "Equal steps give S2R2 2.5 times SimCLR's encoder work; a fair comparison holds the forward "
                  "passes (or the measured training time) equal, as notebook 06 does.")


# --- Notebook 05 ---------------------------------------------------------------------------------------------

def check_same_class_images(answer, images_per_batch: int = 64, classes: int = 10) -> str:
    """Exercise 05.1: other images of the query's class in a batch of B images over balanced classes: (B - 1) / classes."""
    answer = _number("check_same_class_images", "answer", answer)
    expected = (images_per_batch - 1) / classes
    if math.isclose(answer, images_per_batch / classes) and not math.isclose(answer, expected, abs_tol=0.01):
        raise NotYet("Not yet. Hint: that counts the query's own image; the question asks for the other images.")
    return _judge(abs(answer - expected) <= 0.01,
                  "each of the other B - 1 images in the batch shares the query's class with probability "
                  "1 / (number of classes).",
                  f"About {expected:.1f} images, each with K views, are negatives of the same class: the loss "
                  "pushes apart views that a linear probe should keep together.")


# --- Notebook 06 ---------------------------------------------------------------------------------------------

def check_images_per_prototype(answer, images: int = 16, prototypes: int = 30) -> str:
    """Exercise 06.2: Sinkhorn's equal partition gives every prototype images / prototypes of a batch."""
    answer = _number("check_images_per_prototype", "answer", answer)
    return _judge(math.isclose(answer, images / prototypes, rel_tol=1e-2),
                  "Sinkhorn-Knopp makes every prototype receive the same share of the batch's assignments.",
                  "Less than one image per prototype: the only equal partition is soft, so the codes (SwAV's "
                  "targets) are softer than with a queue of past embeddings, which gives the partition enough "
                  "items for each image to take a nearly one-hot code.")


# --- Student and instructor copies ---------------------------------------------------------------------------

_REGION = re.compile(rf"^([ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*(\n|$)", re.S | re.M)


def without_solution_regions(source: str) -> str:
    """``source`` with every BEGIN/END SOLUTION region replaced by the stub, at the region's indentation."""
    def stub(match):
        return "".join(f"{match[1]}{line}\n" for line in STUB.splitlines())
    stripped = _REGION.sub(stub, source)
    if BEGIN in stripped or END in stripped:
        raise ValueError(f"without_solution_regions: a {BEGIN!r} without its {END!r} (or the reverse) in:\n{source}")
    return stripped


def is_solution(cell) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def copy_for(notebook, kind: str):
    """A copy of ``notebook`` (nbformat) for ``kind``: "student" (no solutions) or "instructor"; outputs cleared."""
    if kind not in KINDS:
        raise ValueError(f"copy_for: kind must be one of {KINDS}, got {kind!r}")
    notebook = copy.deepcopy(notebook)
    if kind == "student":
        notebook.cells = [cell for cell in notebook.cells if not is_solution(cell)]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if kind == "student":
                cell.source = without_solution_regions(cell.source)
        cell.metadata.pop("execution", None)
    return notebook


def write_copies(kind: str, out: str | Path | None = None, notebooks: Path | None = None) -> list[Path]:
    """Write ``kind`` copies of every notebook in ``notebooks`` (default: the project's) to ``out``
    (default: build/<kind>/). Returns the paths written."""
    import nbformat

    from .fileio import atomic_write_bytes
    from .reproduce import notebook_paths
    from .results import project_dir

    sources = notebook_paths(notebooks)
    out = Path(out) if out is not None else project_dir(sources[0].parent) / "build" / kind
    if out.resolve() == sources[0].parent.resolve():
        raise OverSources(f"out {str(out)!r} is the notebooks' own folder: the {kind} copies would overwrite the "
                          f"sources; write them elsewhere, e.g. build/{kind} (the default)")
    written = []
    for path in sources:
        copied = nbformat.writes(copy_for(nbformat.read(path, as_version=4), kind))
        atomic_write_bytes(out / path.name, copied.encode())  # never a torn notebook
        written.append(out / path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2r2lib.course", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=KINDS, help="student: solutions removed; instructor: solutions kept")
    parser.add_argument("--out", help="folder to write into (default: build/<kind>/)")
    args = parser.parse_args(argv)
    try:
        written = write_copies(args.kind, args.out)
    except OverSources as error:
        parser.error(f"--{error}")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
