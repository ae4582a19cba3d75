"""The course kit: every exercise has a worked solution, the student copies hold none of them and no output, and
each answer check accepts the right answer and answers a wrong one with its hint, never the answer.

The solutions themselves execute in tests/test_notebooks.py and tests/test_study.py, which run every notebook,
solution cells included, at the quick profile; a solution whose check fails fails those runs."""

import re
import subprocess
import sys

import nbformat
import pytest

from s2r2lib import course, reproduce

NOTEBOOKS = reproduce.notebook_paths()


def exercise_numbers(notebook) -> list[int]:
    (cell,) = [c for c in notebook.cells if "## Exercises" in c.source]
    return [int(n) for n in re.findall(r"^(\d+)\. ", cell.source.split("## Exercises", 1)[1], flags=re.MULTILINE)]


def check_cells(notebook) -> list[str]:
    return [c.source for c in notebook.cells if c.cell_type == "code" and "course.check_" in c.source]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_worked_solution_that_explains_it(path):
    notebook = nbformat.read(path, as_version=4)
    solutions = [c for c in notebook.cells if course.is_solution(c)]
    explained = {int(n) for c in solutions if c.cell_type == "markdown"
                 for n in re.findall(r"^\*\*Solution (\d+)\.\*\*", c.source, flags=re.MULTILINE)}
    assert explained == set(exercise_numbers(notebook))
    (exercises,) = [i for i, c in enumerate(notebook.cells) if "## Exercises" in c.source]
    assert all(i > exercises for i, c in enumerate(notebook.cells) if course.is_solution(c) or "course.check_" in c.source)


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    for kind in course.KINDS:  # as `make student` and `make instructor` run it
        subprocess.run([sys.executable, "-m", "s2r2lib.course", kind, "--out", str(out / kind)], check=True,
                       cwd=NOTEBOOKS[0].parents[1], capture_output=True)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_student_copy_keeps_exercises_hints_and_checks_but_no_solution_and_no_output(copies, path):
    source = nbformat.read(path, as_version=4)
    student = nbformat.read(copies / "student" / path.name, as_version=4)
    assert not [c for c in student.cells if course.is_solution(c)]
    assert not [c for c in student.cells if course.BEGIN in c.source or course.END in c.source]
    assert all(not c.outputs and c.execution_count is None for c in student.cells if c.cell_type == "code")
    kept = [c.source for c in source.cells if not course.is_solution(c)]
    assert [c.source for c in student.cells if "course.check_" not in c.source] == [
        s for s in kept if "course.check_" not in s]  # every other cell, the exercises and hints among them, as is
    assert len(check_cells(student)) == len(check_cells(source))
    assert all("# your code here" in s and "raise NotImplementedError" in s for s in check_cells(student))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_instructor_copy_is_the_source_without_outputs(copies, path):
    source = nbformat.read(path, as_version=4)
    instructor = nbformat.read(copies / "instructor" / path.name, as_version=4)
    assert [c.source for c in instructor.cells] == [c.source for c in source.cells]
    assert all(not c.outputs for c in instructor.cells if c.cell_type == "code")


def test_a_solution_region_becomes_the_stub_at_its_indentation():
    source = "def ap(rank):\n    ### BEGIN SOLUTION\n    return 1 / rank\n    ### END SOLUTION\n\ncheck(ap)\n"
    assert course.without_solution_regions(source) == (
        "def ap(rank):\n    # your code here\n    raise NotImplementedError(\"your answer goes here: replace these two "
        "lines with it, then run the cell\")\n\ncheck(ap)\n")
    with pytest.raises(ValueError, match="END SOLUTION"):
        course.without_solution_regions("### BEGIN SOLUTION\nanswer = 1\n")


def test_a_student_check_cell_runs_the_check_once_the_stub_is_replaced():
    (cell,) = [s for s in check_cells(nbformat.read(NOTEBOOKS[0], as_version=4)) if "ap_one_positive" in s]
    stub = course.without_solution_regions(cell)
    with pytest.raises(NotImplementedError, match="your answer goes here"):  # not a bare error: it says what to do
        exec(stub, {})
    (line,) = [line for line in stub.splitlines() if "raise NotImplementedError" in line]
    with pytest.raises(course.NotYet, match="Hint: with one positive"):
        exec(stub.replace(line, "    return 1 / rank ** 2"), {})
    exec(stub.replace(line, "    return 1 / rank"), {})


# (check, the right answer, a wrong one, words of its hint). The right answers are worked out independently of
# the notebooks' solutions, which their own runs check.
CHECKS = [
    (course.check_sigmoid_slope, dict(answer=0.25, tau=1.0), dict(answer=1.0, tau=1.0), "phi (1 - phi) / tau"),
    (course.check_sigmoid_slope, dict(answer=25.0, tau=0.01), dict(answer=0.25, tau=0.01), "phi (1 - phi) / tau"),
    (course.check_ap_one_positive, dict(ap=lambda rank: 1 / rank), dict(ap=lambda rank: 1 / (rank + 1)),
     "R(i, P) = 1"),
    (course.check_views_per_query, dict(images_per_batch=16, views_per_image=8, positives=7, negatives=120),
     dict(images_per_batch=16, views_per_image=8, positives=8, negatives=128), "the other views of its own image"),
    (course.check_views_per_query, dict(images_per_batch=64, views_per_image=2, positives=1, negatives=126),
     dict(images_per_batch=64, views_per_image=2, positives=1, negatives=127), "the other views of its own image"),
    (course.check_rescaling, dict(linear_changes=False, knn_changes=True), dict(linear_changes=True, knn_changes=True),
     "standardises every feature"),
    (course.check_stronger_claim, dict(answer="S2R2 beats SimCLR"), dict(answer="SwAV"), "more than one point"),
    (course.check_forward_pass_ratio, dict(answer=1280 / 512), dict(answer=1 / 2.5), "count the views"),
    (course.check_same_class_images, dict(answer=6.3), dict(answer=63), "1 / (number of classes)"),
    (course.check_images_per_prototype, dict(answer=16 / 30), dict(answer=30 / 16), "the same share"),
]


@pytest.mark.parametrize("check, right, wrong, hint", CHECKS, ids=lambda v: getattr(v, "__name__", ""))
def test_each_check_accepts_the_right_answer_and_answers_a_wrong_one_with_its_hint(check, right, wrong, hint, capsys):
    check(**right)
    assert capsys.readouterr().out.startswith("Right.")
    with pytest.raises(course.NotYet) as wrong_answer:
        check(**wrong)
    message = str(wrong_answer.value)
    assert hint in message
    for value in right.values():  # the hint never gives the right answer away (a count of two digits or more too)
        if isinstance(value, float) and value not in wrong.values():
            assert f"{value:g}" not in message
        if type(value) is int and value >= 10 and value not in wrong.values():
            assert not re.search(rf"\b{value}\b", message), value


def test_the_sigmoid_slope_check_says_how_far_the_slope_falls_at_each_temperature(capsys):
    assert course.check_sigmoid_slope(0.25, tau=1.0).startswith(
        "At tau = 1 the slope falls from its value at a tie to 0.105 at a similarity difference of 2: every pair")
    assert course.check_sigmoid_slope(25.0, tau=0.01).startswith(
        "At tau = 0.01 the slope falls from its value at a tie to 1.38e-85 at a similarity difference of 2: only")


def test_the_stronger_claim_is_read_from_the_transcribed_tables():
    leads = course.paper_leads()
    assert set(leads) == {"SimCLR", "SwAV"} and all(0 <= wins <= cells for wins, cells in leads.values())
    assert leads["SimCLR"][1] > leads["SwAV"][1]  # Table 2 prints no SwAV
    for both in ("SimCLR and SwAV", "S2R2 beats SimCLR much more than SwAV"):  # naming both is not an answer
        with pytest.raises(TypeError, match="name one baseline"):
            course.check_stronger_claim(both)


def test_a_placeholder_answer_says_what_to_do():
    with pytest.raises(TypeError, match="replace the placeholder"):
        course.check_sigmoid_slope(...)
    with pytest.raises(TypeError, match="function of the positive's rank"):
        course.check_ap_one_positive(0.5)


def test_answers_computed_with_numpy_or_torch_are_taken_as_the_numbers_they_hold(capsys):
    import numpy as np
    import torch

    ids = torch.arange(16).repeat_interleave(8)
    course.check_views_per_query(16, 8, (ids == ids[0]).sum() - 1, (ids != ids[0]).sum())  # 0-d tensors
    course.check_views_per_query(64, 2, np.int64(1), np.float32(126))
    course.check_sigmoid_slope(torch.tensor(0.25))
    course.check_rescaling(np.False_, torch.tensor(True))
    assert capsys.readouterr().out.count("Right.") == 4
    with pytest.raises(TypeError, match="finite number"):
        course.check_sigmoid_slope(torch.tensor([0.25]))  # a vector is not an answer
    with pytest.raises(TypeError, match="True or False"):
        course.check_rescaling(0, 1)


def test_counting_the_query_itself_is_told_apart_from_other_wrong_counts():
    with pytest.raises(course.NotYet, match="counts the query's own image"):
        course.check_same_class_images(64 / 10)
    for wrong in (6.2, 6.0, 7.0):
        with pytest.raises(course.NotYet, match="1 / \\(number of classes\\)"):
            course.check_same_class_images(wrong)


# Each exercise's answer, in the forms a hint could give it away; the notebooks' exercise lists must hold none.
ANSWERS_NOT_IN_HINTS = {
    "01_loss_derivation": ["1/(4τ)", "1 / (4τ)", "1 / (its rank", "1/rank", "reciprocal rank"],
    "02_training": ["7 positives", "ranks 7", "classifies 1", "120 negatives", "126 negatives"],
    "03_linear_probe": ["standardises"],
    "04_tables": ["SimCLR more", "more convincingly than SwAV"],
    "05_figure1": ["6.3", "63 / 10", "(B − 1)/10", "(B - 1) / 10"],
    "06_miniature_study": ["16/30", "16 / 30", "16 images over 30", "0.53"],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_exercise_hint_gives_its_answer_away(path):
    (cell,) = [c for c in nbformat.read(path, as_version=4).cells if "## Exercises" in c.source]
    exercises = cell.source.split("## Exercises", 1)[1]
    assert [answer for answer in ANSWERS_NOT_IN_HINTS[path.stem] if answer in exercises] == []


def test_the_copies_never_overwrite_the_source_notebooks(tmp_path, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01_x.ipynb").write_bytes(NOTEBOOKS[0].read_bytes())
    with pytest.raises(course.OverSources, match="the notebooks' own folder"):
        course.write_copies("student", out=notebooks, notebooks=notebooks)
    assert (notebooks / "01_x.ipynb").read_bytes() == NOTEBOOKS[0].read_bytes()
    written = course.write_copies("student", out=tmp_path / "student", notebooks=notebooks)
    assert [p.name for p in written] == ["01_x.ipynb"] and course.BEGIN not in written[0].read_text()


def test_the_course_command_names_out_only_for_its_own_refusal(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(NOTEBOOKS[0].parents[1])
    with pytest.raises(SystemExit):
        course.main(["student", "--out", "notebooks"])
    assert "error: --out 'notebooks' is the notebooks' own folder" in capsys.readouterr().err
    def broken(kind, out):
        raise ValueError("a '### BEGIN SOLUTION' without its '### END SOLUTION' (or the reverse) in: x")

    monkeypatch.setattr(course, "write_copies", broken)
    with pytest.raises(ValueError, match="without its '### END SOLUTION'"):  # the notebook's fault, said as is
        course.main(["student"])
