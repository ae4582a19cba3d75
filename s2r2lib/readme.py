"""The README's generated sections. Each sits between two marker comments and is written from the committed
tables, so that no number in it can drift from the rows:

- ``measured``: what notebooks 03 and 05 measured (results/runs.csv, tables ``probe`` and ``figure1``),
  :func:`measured_lines`;
- ``study lr search``: each method's learning-rate search (results/runs.csv, table ``study-lr``),
  :func:`s2r2lib.study.lr_search_lines`;
- ``study verdicts``: the study's verdicts (results/study_verdicts.csv), :func:`s2r2lib.study.readme_lines`.

``python -m s2r2lib.readme`` rewrites them (``make reproduce`` runs it after the notebooks); ``--check`` writes
nothing and exits 1 when a section is stale."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd


class Section(NamedTuple):
    name: str
    table: str                                      # the committed table it is written from
    lines: Callable[[pd.DataFrame], list[str]]      # that table -> the section's lines

    @property
    def begin(self) -> str:
        return f"<!-- {self.name}: written by `python -m s2r2lib.readme` from results/{self.table}.csv -->"

    @property
    def end(self) -> str:
        return f"<!-- end of the {self.name} -->"

    def block(self, table: pd.DataFrame) -> str:
        return "\n".join([self.begin, *self.lines(table), self.end])


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _steps(rows: pd.DataFrame) -> str:
    """How long the runs of ``rows`` trained: steps from views seen (runs.csv has no steps for these tables)."""
    steps = set((rows["views_seen"] / (rows["images"] * rows["views"])).round())
    if len(steps) == 1 and rows["views_seen"].notna().all():
        return f"{int(steps.pop())} steps"
    low, high = rows["epochs"].min(), rows["epochs"].max()  # rows written before runs.csv had their views seen
    return f"{low:g} epochs" if low == high else f"{low:g} to {high:g} epochs"


def _provenance(rows: pd.DataFrame) -> str:
    return "; ".join(f"commit {commit}, {device}" for commit, device in
                     rows[["commit", "device"]].drop_duplicates().itertuples(index=False))


def probe_lines(runs: pd.DataFrame) -> list[str]:
    """A sentence for each trained run of table ``probe`` (notebook 03): its linear and kNN top-1 against the
    random-init encoder of the same data, architecture and seed."""
    rows = runs.query("table == 'probe' and source == 'measured'")
    lines = []
    trained = rows[rows["method"] != "random-init"]
    for (dataset, arch, seed, method, images, views, _), run in trained.groupby(
            ["dataset", "arch", "seed", "method", "images", "views", "epochs"], sort=False):
        score = run.set_index("metric")["value"]
        floor = rows.query("method == 'random-init' and dataset == @dataset and arch == @arch and seed == @seed")
        base = floor.set_index("metric")["value"]
        seconds = f", {run['train_s'].iloc[0]:.0f} s of training" if pd.notna(run["train_s"].iloc[0]) else ""
        against = (f" against **{_pct(base['linear_top1'])}** for the same encoder at random init" if len(floor)
                   else " (no random-init row of this data, architecture and seed)")
        knn = (f"; kNN top-1 (k = 20) {_pct(score['knn20_top1'])}"
               + (f" against {_pct(base['knn20_top1'])}" if len(floor) else ""))
        lines.append(
            f"- **Notebook 03's probe** (`results/runs.csv`, table `probe`; {_provenance(pd.concat([run, floor]))}): "
            f"after {_steps(run.head(1))} of {method} with {images:d} images × {views:d} views on the {dataset} data "
            f"({arch}, seed {seed:d}{seconds}), the linear probe reaches **{_pct(score['linear_top1'])}** top-1 on "
            f"the test split{against}{knn}. One seed at notebook 02's settings, not tuned: notebook 06 compares "
            f"the methods.")
    return lines


def _sweep(points: pd.DataFrame, along: str, fixed: str) -> tuple[int, pd.DataFrame] | None:
    """The longest run of points that vary ``along`` at one value of ``fixed``: (that value, its points)."""
    if points.empty:
        return None
    counts = points.groupby(fixed)[along].nunique()
    value = counts.idxmax()
    return int(value), points[points[fixed] == value].sort_values(along)


def _seed_sd(runs: pd.DataFrame) -> str:
    """The study's seed noise: the standard deviation over seeds of S2R2's final linear top-1 on the object set."""
    final = runs.query("table == 'study' and method == 'S2R2' and dataset == 'embedded-object' "
                       "and metric == 'linear_top1'")
    final = final[final["steps"] == final.groupby("seed")["steps"].transform("max")]
    if final["seed"].nunique() < 2:
        return ""
    return (f" (the study's {final['seed'].nunique()} seeds of S2R2 on the object set spread by a standard "
            f"deviation of {100 * final['value'].std():.1f} points)")


def figure1_lines(runs: pd.DataFrame) -> list[str]:
    """Figure 1's two sweeps of table ``figure1`` (notebook 05), point by point, and their random-init floor."""
    rows = runs.query("table == 'figure1' and source == 'measured' and metric == 'linear_top1'")
    points = rows[rows["method"] != "random-init"]
    by_images, by_views = _sweep(points, "images", "views"), _sweep(points, "views", "images")
    if by_images is None:
        return []
    (k, images), (b, views) = by_images, by_views
    floor = rows[rows["method"] == "random-init"]["value"]
    parts = [f"at K = {k}: " + ", ".join(f"{_pct(r.value)} (B = {r.images:d})" for r in images.itertuples()),
             f"at B = {b}: " + ", ".join(f"{_pct(r.value)} (K = {r.views:d})" for r in views.itertuples())]
    best_b, best_k = images.loc[images["value"].idxmax(), "images"], views.loc[views["value"].idxmax(), "views"]
    return [f"- **Figure 1 in miniature** (`results/runs.csv`, table `figure1`, notebook 05; "
            f"{_provenance(rows)}): S2R2's linear top-1 after {_steps(points)} a point, one seed each; "
            f"{'; '.join(parts)}" + (f"; random init {_pct(floor.iloc[0])}" if len(floor) else "") + ". "
            f"The highest point is B = {best_b:d} along B and K = {best_k:d} along K. Every point trains for the "
            f"same number of steps, so a larger B or K also sees more views; and with one seed a point, "
            f"differences of a few points are within the noise{_seed_sd(runs)}. So this sweep can neither show nor "
            f"rule out the paper's fall at large B."]


def measured_lines(runs: pd.DataFrame) -> list[str]:
    """The README's list items on notebooks 03 and 05's committed rows, wrapped as the README is."""
    glue = "\0"  # keeps "B = 32" on one line
    return [line.replace(glue, " ") for item in probe_lines(runs) + figure1_lines(runs)
            for line in textwrap.wrap(item.replace(" = ", f"{glue}={glue}"), width=115, subsequent_indent="  ",
                                      break_long_words=False, break_on_hyphens=False)]


def _study_lines(table: pd.DataFrame) -> list[str]:
    from . import study

    return study.readme_lines(table)


def _lr_search_lines(runs: pd.DataFrame) -> list[str]:
    from . import study

    return study.lr_search_lines(runs)


SECTIONS = (Section("measured rows", "runs", measured_lines),
            Section("study lr search", "runs", _lr_search_lines),
            Section("study verdicts", "study_verdicts", _study_lines))


def rewrite(text: str, section: Section, table: pd.DataFrame) -> str:
    """``text`` with ``section``'s block rewritten from ``table``; a text without the section's two markers is
    refused, naming them."""
    begin, end = text.find(section.begin), text.find(section.end)
    if begin < 0 or end < begin:
        raise ValueError(f"the README has no {section.name} section: put the lines {section.begin!r} and "
                         f"{section.end!r} where it belongs")
    return text[:begin] + section.block(table) + text[end + len(section.end):]


def update(readme: str | Path, tables: dict[str, pd.DataFrame] | None = None, check: bool = False) -> list[str]:
    """Rewrite every section of :data:`SECTIONS` in ``readme`` from ``tables`` (default: the committed tables),
    atomically; with ``check``, write nothing. Returns the names of the sections that were (or would be)
    changed."""
    from .fileio import atomic_write_bytes
    from .results import committed_table

    path = Path(readme)
    text = new = path.read_text()
    stale = []
    for section in SECTIONS:
        table = tables[section.table] if tables is not None else committed_table(section.table)
        rewritten = rewrite(new, section, table)
        if rewritten != new:
            stale.append(section.name)
        new = rewritten
    if new != text and not check:
        atomic_write_bytes(path, new.encode())
    return stale


def main(argv: list[str] | None = None) -> int:
    from .results import project_dir

    parser = argparse.ArgumentParser(prog="python -m s2r2lib.readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a section is stale, writing nothing")
    args = parser.parse_args(argv)
    readme = project_dir() / "README.md"
    stale = update(readme, check=args.check)
    for section in SECTIONS:
        state = ("stale" if args.check else "rewritten") if section.name in stale else "up to date"
        print(f"{readme}: {section.name} {state}")
    return int(args.check and bool(stale))


if __name__ == "__main__":
    sys.exit(main())
