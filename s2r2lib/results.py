"""The results tables (pandas, typed columns), where outputs go, and where every number came from.

Tables: every CSV in results/ is a tidy table with declared column types (:data:`TABLES`): runs.csv
(the paper's numbers and ours, one row per number), bench_*.csv (benchmarks), and any table a caller
declares with ``dtypes``. :func:`write_table` merges rows into a table by its key columns under a lock, and
replaces the file atomically; it refuses text where a number belongs, and text that a spreadsheet would run
as a formula (a leading ``=``, ``+``, ``-`` or ``@``: OWASP's CSV injection).

Output folders (each overridable by an environment variable, which is how the tests keep a test run
from touching the committed files):

  figures  S2R2_FIGURES_DIR  published: <project>/figures   scratch: <project>/build/scratch/figures
  results  S2R2_RESULTS_DIR  published: <project>/results   scratch: <project>/build/scratch/results
  records  S2R2_RECORDS_DIR  <project>/build/records   (numbers a notebook records for tests)
  runs     S2R2_RUNS_DIR     <project>/build/runs      (training runs, keyed by content: s2r2lib.reproduce)

Publishing: a notebook run by hand writes figures and rows to the scratch folders and never changes the
committed results/ or figures/; ``make reproduce`` (which sets S2R2_PUBLISH=1) or a notebook's
``publish = True`` (:func:`set_publish`) writes the committed ones. A scratch table starts from the
published one, so a notebook run by hand reads the project's rows with the reader's own on top.

<project> is the nearest folder at or above the working directory that holds ``s2r2lib/`` and
``pyproject.toml`` (notebooks run in ``notebooks/``); outside a checkout it is the working directory.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .fileio import atomic_write_bytes, locked

__all__ = ["atomic_write_bytes"]  # re-exported for callers that have not moved to s2r2lib.fileio yet

_DIRS = {
    "figures": ("S2R2_FIGURES_DIR", "figures", "build/scratch/figures"),
    "results": ("S2R2_RESULTS_DIR", "results", "build/scratch/results"),
    "records": ("S2R2_RECORDS_DIR", "build/records", "build/records"),
    "runs": ("S2R2_RUNS_DIR", "build/runs", "build/runs"),
}
PUBLISH_ENV = "S2R2_PUBLISH"


def project_dir(start: Path | None = None) -> Path:
    """The checkout that holds s2r2lib/ at or above ``start`` (default: the working directory)."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "s2r2lib").is_dir():
            return folder
    return start


def publishing() -> bool:
    """Whether outputs go to the committed results/ and figures/ (S2R2_PUBLISH=1) or to build/scratch/."""
    return os.environ.get(PUBLISH_ENV, "") == "1"


def set_publish(publish: bool) -> None:
    """A notebook's ``publish`` parameter: True writes the committed results/ and figures/ from here on
    (in this process and the processes it starts), False the scratch folders under build/."""
    if not isinstance(publish, bool):
        raise TypeError(f"publish must be True or False, got {publish!r}")
    os.environ[PUBLISH_ENV] = "1" if publish else "0"


def output_dir(kind: str, published: bool | None = None) -> Path:
    """The folder for ``kind`` (figures, results, records or runs), created if missing: the published or
    the scratch one as :func:`publishing` says, unless ``published`` picks one."""
    folder = _folder(kind, published)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _folder(kind: str, published: bool | None = None) -> Path:
    """:func:`output_dir` without creating it."""
    if kind not in _DIRS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {sorted(_DIRS)}")
    env, public, scratch = _DIRS[kind]
    if os.environ.get(env):  # a relative one is the checkout's, wherever the process runs (a kernel: notebooks/)
        return project_dir() / os.environ[env]
    return project_dir() / (public if (publishing() if published is None else published) else scratch)


# --- Provenance ----------------------------------------------------------------------------------------

def code_dir() -> Path:
    """The checkout this library was imported from, whose commit a measured number names (wherever the
    process runs: another project's git repository in the working directory is not the code's)."""
    return Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=code_dir(), capture_output=True, text=True, check=True).stdout


def _notebook_sources(text: str) -> list[tuple[str, str]]:
    """A notebook's cells as (type, source): what a reader wrote, without outputs or counters."""
    cells = json.loads(text).get("cells", [])
    return [(cell.get("cell_type", ""), "".join(cell.get("source", ""))) for cell in cells]


def changed_sources() -> list[str]:
    """Which of the code's two parts differ from the commit: ``s2r2lib`` (any file, new ones too) and
    ``notebooks`` (a cell's type or source; saved outputs never count)."""
    changed = []
    if _git("status", "--porcelain", "--", "s2r2lib").strip():
        changed.append("s2r2lib")
    for line in _git("status", "--porcelain", "--", "notebooks").splitlines():
        path = line[3:].strip().strip('"')
        if not path.endswith(".ipynb"):
            continue
        try:
            before = _notebook_sources(_git("show", f"HEAD:{path}"))
        except subprocess.CalledProcessError:  # a new notebook
            before = None
        now = code_dir() / path
        if before is None or not now.exists() or _notebook_sources(now.read_text()) != before:
            changed.append("notebooks")
            break
    return changed


def git_commit(short: bool = True) -> str:
    """The commit of the library's checkout (:func:`code_dir`), with ``+modified:s2r2lib,notebooks`` naming the
    parts of the code that differ from it (results, figures and a notebook's saved outputs never count);
    $S2R2_COMMIT where set (a copy of the checkout without git, e.g. on a lent GPU machine); ``unknown`` outside
    git."""
    if os.environ.get("S2R2_COMMIT"):
        return os.environ["S2R2_COMMIT"]
    try:
        rev = _git("rev-parse", "--short" if short else "--verify", "HEAD").strip()
        changed = changed_sources()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (f"+modified:{','.join(changed)}" if changed else "")


def device_name(device: Any = "cpu") -> str:
    """A person-readable name of the device a number was measured on."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def provenance(device: Any = "cpu") -> dict[str, str]:
    """Commit, device, library versions and date: the columns every measured row carries."""
    import torch

    return {
        "commit": git_commit(),
        "device": device_name(device),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def record(notebook: str, **numbers: Any) -> Path:
    """Save the key numbers a notebook computed, as JSON in the records folder, for the tests to check."""
    path = output_dir("records") / f"{notebook}.json"
    return atomic_write_bytes(path, json.dumps(numbers, indent=2, sort_keys=True).encode())


def read_record(notebook: str) -> dict[str, Any]:
    """The numbers :func:`record` saved for ``notebook``."""
    return json.loads((output_dir("records") / f"{notebook}.json").read_text())


# --- Typed tables ----------------------------------------------------------------------------------------

S, I, F, B = "string", "Int64", "Float64", "boolean"
_PROVENANCE = {"commit": S, "device": S, "torch": S, "date": S}

RUN_DTYPES = {"table": S, "arch": S, "dataset": S, "method": S, "images": I, "views": I, "epochs": F, "seed": I,
              "lr": F, "steps": I, "views_seen": I, "metric": S, "value": F, "source": S, "protocol": S,
              "commit": S, "device": S, "train_s": F, "wall_s": F, "date": S}
RUN_COLUMNS = list(RUN_DTYPES)
RUN_KEY = ("table", "arch", "dataset", "method", "images", "views", "epochs", "seed", "lr", "steps", "metric",
           "source")

# a verdict is judged from runs.csv rows: rows_commits names the commits that made them, commit, device and date
# the code that judged them (s2r2lib.study.judged_provenance)
_VERDICT = {"claim": S, "data": S, "verdict": S, "effect": F, "ci_low": F, "ci_high": F, "threshold": F, "seeds": I,
            "comparison": S, "level": F, "rows_commits": S, "commit": S, "device": S, "date": S}
# name (the file's stem in results/) -> (column -> dtype, key columns)
TABLES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "runs": (RUN_DTYPES, RUN_KEY),
    "bench_loss": ({"impl": S, "N": I, "B": I, "K": I, "D": I, "tau": F, "device": S, "threads": I,
                    "fwd_bwd_s": F, "peak_mib": F, "memory_measure": S, "repeats": I, "time_vs_s2r2lib": F,
                    "status": S, **_PROVENANCE}, ("device", "threads", "impl", "N", "K", "D", "tau")),
    "bench_train": ({"arch": S, "method": S, "preset": S, "scale": I, "images": I, "views": I, "view_sizes": S,
                     "precision": S, "channels_last": B, "device": S, "threads": I, "step_s": F, "views_per_s": F,
                     "peak_mib": F, "encoder_step_s": F, "encoder_views_per_s": F, "encoder_peak_mib": F,
                     "time_vs_encoder": F, "overhead_share": F, "meets_goal": S, "memory_measure": S,
                     "repeats": I, "load_avg": F, "status": S, **_PROVENANCE},
                    ("device", "arch", "method", "scale", "precision", "channels_last")),
    "bench_views": ({"size": I, "images": I, "views_per_image": I, "backend": S, "workers": I, "arch": S,
                     "encoder_batch": I, "rate": F, "unit": S, "ratio_to_encoder": F, "status": S, **_PROVENANCE},
                    ("device", "size", "images", "views_per_image", "backend", "workers", "arch")),
    # python -m s2r2lib.bench gpu: one row per measurement; value is text (numbers, yes/no, a device name).
    "bench_gpu": ({"suite": S, "config": S, "metric": S, "value": S, "unit": S, "status": S, "note": S, "wall_s": F,
                   "commit": S, "device": S, "torch": S, "date": S}, ("device", "suite", "config", "metric")),
    # python -m s2r2lib.bench study: notebook 06's step per setting, "ratio" today's step time over it
    "bench_study": ({"setting": S, "method": S, "processes": I, "threads": I, "s_per_step": F, "ratio": F,
                     "first_step_s": F, "wall_s": F, "load_avg": F, "status": S, **_PROVENANCE},
                    ("device", "method", "setting")),
    "bench_probe": ({"impl": S, "train": I, "test": I, "dim": I, "classes": I, "device": S, "threads": I,
                     "linear_s": F, "knn_s": F, "map_s": F, "total_s": F, "speedup_vs_before": F, "meets_goal": S,
                     "linear_top1": F, "knn20_top1": F, "knn200_top1": F, "retrieval_map": F, "note": S, "status": S,
                     "commit": S, "torch": S, "date": S}, ("device", "impl", "threads", "train", "test", "dim",
                                                           "classes")),
    # notebook 06's verdicts (s2r2lib.study.verdicts): effects and intervals as fractions of top-1; and
    # its budget checks (s2r2lib.study.budget_checks): at the committed budget (1) and at the long profile's
    # (budget = its factor), with claims 1, 2 and the control there. The _gpu tables are the same two of the
    # study at another scale (s2r2lib.study.output_name).
    **{name: table for scale in ("", "_gpu") for name, table in (
        (f"study_verdicts{scale}", (_VERDICT, ("claim", "data", "comparison"))),
        (f"study_budget{scale}", ({"budget": I, **_VERDICT}, ("budget", "claim", "data", "comparison"))))},
    "mutation": ({"module": S, "tests": S, "killed": I, "survived": I, "timeout": I, "equivalent": I, "no_tests": I,
                  "total": I, "sampled": S, "score": F, "ci_low": F, "ci_high": F, "tool": S, "commit": S, "date": S,
                  "wall_s": F}, ("module",)),
}
_FORMULA = re.compile(r"^[=+\-@\t\r]")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # "-0.05" in a text column runs nothing


def table_path(name: str | os.PathLike, published: bool | None = None) -> Path:
    """results/<name>.csv for a table name; a path (``.csv``) as given."""
    name = Path(name)
    return name if name.suffix == ".csv" else output_dir("results", published) / f"{name}.csv"


def _schema(path: Path, dtypes: Mapping[str, str] | None, key: Iterable[str] | None):
    declared_dtypes, declared_key = TABLES.get(path.stem, (None, None))
    dtypes, key = dtypes or declared_dtypes, tuple(key or declared_key or ())
    if dtypes is None or not key:
        raise ValueError(f"table {path.stem!r} has no declared column types or key; pass dtypes= and "
                         f"key_columns=, or declare it in s2r2lib.results.TABLES")
    missing = [column for column in key if column not in dtypes]
    if missing:
        raise ValueError(f"key_columns {missing} of table {path.stem!r} are not among its columns {list(dtypes)}")
    return dict(dtypes), key


def typed(rows: pd.DataFrame | Iterable[Mapping[str, Any]], dtypes: Mapping[str, str],
          table: str = "table", first_line: int | None = None) -> pd.DataFrame:
    """``rows`` as a DataFrame with exactly the columns of ``dtypes``, each of its declared type (a missing
    column is empty). Refuses unknown columns, a number column holding anything but a finite number or an
    empty cell, and text starting with =, +, -, @ (a spreadsheet would run it). ``first_line`` numbers the
    rows as lines of a file in the errors."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    unknown = [column for column in frame.columns if column not in dtypes]
    if unknown:
        raise ValueError(f"{table} has no column(s) {unknown}; its columns are {list(dtypes)}")
    where = (lambda i: f"line {first_line + i}") if first_line is not None else (lambda i: f"row {i}")
    out = {}
    for column, dtype in dtypes.items():
        values = frame[column].tolist() if column in frame else [None] * len(frame)
        cells = [None if _blank(v) else v for v in values]
        if dtype == S:
            cells = [v if v is None else str(v) for v in cells]
            bad = [i for i, v in enumerate(cells) if v is not None and _FORMULA.match(v) and not _PLAIN_NUMBER.match(v)]
            if bad:
                v = cells[bad[0]]
                raise ValueError(f"{table}, {where(bad[0])}: column {column!r} starts with {v[0]!r}, which a "
                                 f"spreadsheet runs as a formula (CSV injection): {v[:80]!r}; remove the "
                                 f"leading character")
        elif dtype == B:
            spelled = [v if v is None else str(v).strip().lower() for v in cells]
            bad = [i for i, v in enumerate(spelled) if v not in (None, "true", "false")]
            if bad:
                raise ValueError(f"{table}, {where(bad[0])}: column {column!r} holds True or False, "
                                 f"got {values[bad[0]]!r}")
            cells = [v if v is None else v == "true" for v in spelled]
        else:
            numbers = [v if v is None else _number(v) for v in cells]
            bad = [i for i, v in enumerate(numbers) if v is not None
                   and (not np.isfinite(v) or (dtype == I and v % 1 != 0))]
            if bad:
                kind = "an integer" if dtype == I else "a finite number"
                raise ValueError(f"{table}, {where(bad[0])}: column {column!r} holds {kind} (or nothing, for "
                                 f"not measured), got {values[bad[0]]!r}")
            cells = [v if v is None else (int(v) if dtype == I else v) for v in numbers]
        out[column] = pd.array(cells, dtype=dtype)
    return pd.DataFrame(out, index=range(len(frame)))


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number, str)):
        return float("nan")  # True, a list, a dict: not a number
    try:
        return float(value)
    except ValueError:
        return float("nan")


def _read(path: Path, dtypes: Mapping[str, str]) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as error:
        line = re.search(r"line (\d+)", str(error))
        raise ValueError(f"{path}:{line.group(1) if line else '?'}: a line with more fields than the header "
                         f"({error}); fix or delete that line") from None
    short = _first_short_line(path, len(raw.columns))
    if short:
        raise ValueError(f"{path}:{short}: fewer fields than the header's {len(raw.columns)}; fix or delete that line")
    return typed(raw, dtypes, table=str(path), first_line=2)


def _first_short_line(path: Path, width: int) -> int | None:
    """The number of the first line with fewer than ``width`` fields (pandas reads the missing ones as empty
    text, which would pass for blank cells), or None; blank lines are skipped, as pandas skips them."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        for fields in reader:
            if fields and len(fields) < width:
                return reader.line_num
    return None


def read_table(name: str | os.PathLike, dtypes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A results table (``"runs"``, ``"bench_train"``, or a path to a ``.csv``) as a typed DataFrame; in
    scratch mode a table not written there yet is read from the published folder. Empty (with its
    columns) when there is none."""
    path = table_path(name)
    dtypes = dtypes or TABLES.get(path.stem, (None,))[0]
    if dtypes is None:
        raise ValueError(f"table {path.stem!r} has no declared column types; pass dtypes= or declare it in "
                         f"s2r2lib.results.TABLES")
    for candidate in (path, table_path(name, published=True)):
        if candidate.is_file():
            return _read(candidate, dtypes)
    return typed([], dtypes)


def committed_table(name: str) -> pd.DataFrame:
    """The table ``name`` as the project commits it, <project>/results/<name>.csv, whatever the output folders
    say (what a notebook shows as "the committed rows"); empty when there is none."""
    dtypes = TABLES[name][0]
    path = project_dir() / "results" / f"{name}.csv"
    return _read(path, dtypes) if path.is_file() else typed([], dtypes)


def _key_strings(frame: pd.DataFrame, key: tuple[str, ...]) -> list[str]:
    """Each row's key as one string: its ``key`` cells as text (an empty cell as ""), joined by U+001F."""
    return ["\x1f".join(row) for row in frame[list(key)].astype("string").fillna("").to_numpy()]


def merge_rows(old: pd.DataFrame, new: pd.DataFrame, key: tuple[str, ...]) -> pd.DataFrame:
    """``old`` with ``new`` merged in by ``key``: a new row takes the place of the first old row with its key
    (so a rerun keeps the file's order) and of every other old row with it; new rows with other keys go at
    the end, in their order; every other old row stays. Of new rows that share a key, the last one counts."""
    both = pd.concat([old, new])  # rows are picked by position and renumbered at the end
    keys = _key_strings(both, key)
    newest = {k: at for at, k in enumerate(keys) if at >= len(old)}  # key -> its last new row
    order, placed = [], set()
    for at, k in enumerate(keys[:len(old)]):
        if k not in newest:
            order.append(at)
        elif k not in placed:
            order.append(newest[k])
            placed.add(k)
    order += sorted(at for k, at in newest.items() if k not in placed)
    return both.iloc[order].reset_index(drop=True)


def write_table(name: str | os.PathLike, rows: pd.DataFrame | Iterable[Mapping[str, Any]],
                key_columns: Iterable[str] | None = None, dtypes: Mapping[str, str] | None = None) -> Path:
    """Merge ``rows`` into the table ``name`` (results/<name>.csv, or a ``.csv`` path) by ``key_columns``: a
    row replaces the one with the same key, every other row is kept (a CPU run leaves the committed GPU rows
    alone). Types are checked first (:func:`typed`); the read-merge-write holds the file's lock, so
    concurrent writers lose nothing; the file is replaced atomically. Key and types default to the
    table's declaration in :data:`TABLES`."""
    path = table_path(name)
    dtypes, key = _schema(path, dtypes, key_columns)
    new = typed(rows, dtypes, table=path.name)
    with locked(path):
        return atomic_write_bytes(path, _merged_csv(path, new, dtypes, key))


def _merged_csv(path: Path, new: pd.DataFrame, dtypes: Mapping[str, str], key: tuple[str, ...],
                always: pd.DataFrame | None = None) -> bytes:
    published = _folder("results", published=True) / path.name if path.parent == _folder("results") else path
    source = path if path.is_file() else published
    old = _read(source, dtypes) if source.is_file() else typed([], dtypes)
    if always is not None:  # rows the table always holds, added (after the others) where missing
        present = set(_key_strings(old, key))
        old = pd.concat([old, always.loc[[k not in present for k in _key_strings(always, key)]]])
    return merge_rows(old, new, key).to_csv(index=False, lineterminator="\n").encode()


# --- results/runs.csv: the paper's numbers and ours, one tidy table ---------------------------------

# Tables 1 and 2 of the paper, every printed cell, each number exactly as printed (top-1 on STL10-test
# of a linear probe): (table, arch, training data, method, #images, #views) -> {epochs: value}.
_EPOCHS = {"table1": (10, 50, 100, 200, 400, 600, 800, 1000), "table2": (10, 50, 100, 200)}
_PAPER_TABLES = [
    ("table1", "resnet18", "STL10 (unlabeled + train)", "SimCLR", 256, 2, "64.2 74.3 77.8 82.0 84.4 86.1 84.9 86.1"),
    ("table1", "resnet18", "STL10 (unlabeled + train)", "SwAV", 256, 8, "67.4 79.3 82.8 85.6 87.4 88.4 89.5 89.4"),
    ("table1", "resnet18", "STL10 (unlabeled + train)", "S2R2", 64, 20, "72.4 81.6 84.1 86.4 88.4 89.1 89.4 89.8"),
    ("table1", "resnet18", "COCO-Train", "SimCLR", 256, 2, "60.7 68.6 70.9 73.4 75.1 74.9 74.1 74.5"),
    ("table1", "resnet18", "COCO-Train", "SwAV", 128, 6, "65.2 71.7 75.0 75.4 77.1 77.0 77.0 76.8"),
    ("table1", "resnet18", "COCO-Train", "S2R2", 64, 20, "68.3 74.2 76.2 77.2 77.4 77.5 78.0 78.5"),
    ("table1", "resnet18", "COCO-Val", "SimCLR", 64, 2, "46.1 56.1 58.0 62.0 63.5 64.1 64.4 64.8"),
    ("table1", "resnet18", "COCO-Val", "SwAV", 32, 40, "44.1 59.7 63.7 66.3 66.3 65.0 63.3 62.8"),
    ("table1", "resnet18", "COCO-Val", "S2R2", 8, 10, "58.6 64.8 67.5 69.0 68.8 68.8 67.3 68.5"),
    ("table2", "resnet50", "STL10 (unlabeled + train)", "SimCLR", 256, 2, "63.7 76.6 81.1 85.2"),
    ("table2", "resnet50", "STL10 (unlabeled + train)", "S2R2", 32, 20, "77.3 85.9 88.4 89.7"),
    ("table2", "resnet50", "COCO-Train", "SimCLR", 256, 2, "60.4 68.1 74.9 77.5"),
    ("table2", "resnet50", "COCO-Train", "S2R2", 32, 20, "74.1 79.7 81.2 80.1"),
    ("table2", "resnet50", "COCO-Val", "SimCLR", 256, 2, "39.0 48.0 53.4 59.4"),
    ("table2", "resnet50", "COCO-Val", "S2R2", 16, 20, "54.3 65.6 68.4 70.2"),
]
PAPER_PROTOCOL = ("as printed in the paper: linear classifier on frozen features, trained on STL10-train, "
                  "top-1 on STL10-test; best hyper-parameters per model")


def paper_rows() -> pd.DataFrame:
    """Every cell of the paper's Tables 1 and 2 as a ``source=paper`` row of runs.csv (value in %, as printed)."""
    rows = [{"table": table, "arch": arch, "dataset": dataset, "method": method, "images": images, "views": views,
             "epochs": epochs, "metric": "linear_top1", "value": value, "source": "paper", "protocol": PAPER_PROTOCOL}
            for table, arch, dataset, method, images, views, cells in _PAPER_TABLES
            for epochs, value in zip(_EPOCHS[table], cells.split(), strict=True)]
    return typed(rows, RUN_DTYPES, table="paper rows")


# The paper's training sets as the tables name them: (TrainConfig.data, split) -> label.
PAPER_TRAINING_SETS = {("stl10", "train+unlabeled"): "STL10 (unlabeled + train)", ("coco", "train2017"): "COCO-Train",
                       ("coco", "val2017"): "COCO-Val"}


def paper_cell_rows(rows: Iterable[Mapping[str, Any]], config: Mapping[str, Any], probe_data: str) -> list[dict]:
    """The measured rows that fill printed cells of Tables 1-2: a copy of each trained run's ``linear_top1`` row
    of ``rows`` (notebook 03's, of the run ``config`` trained) as a row of that table, where the run's
    architecture, training set and split, method, #images and #views are a printed row's and its epochs are
    within 1 % of a printed budget (16,400 steps of 64 images are 9.996 epochs of STL10's 105k: the 10-epoch
    cell), and it was probed as the paper probes every cell, on STL10 (``probe_data``). Otherwise none."""
    label = PAPER_TRAINING_SETS.get((config.get("data"), config.get("split")))
    if probe_data != "stl10" or label is None:
        return []
    cells = []
    for row in rows:
        if row["metric"] != "linear_top1" or row["method"] == "random-init":
            continue
        for table, arch, dataset, method, images, views, _ in _PAPER_TABLES:
            if (arch, dataset, method, images, views) != (row["arch"], label, row["method"], int(row["images"]),
                                                         int(row["views"])):
                continue
            cells += [{**row, "table": table, "dataset": dataset, "epochs": budget} for budget in _EPOCHS[table]
                      if abs(float(row["epochs"]) - budget) <= 0.01 * budget]
    return cells


def runs_path() -> Path:
    return table_path("runs")


def read_runs() -> pd.DataFrame:
    """results/runs.csv as a typed DataFrame (the paper's rows when the file does not exist yet)."""
    runs = read_table("runs")
    return runs if len(runs) else paper_rows()


def write_runs(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Path:
    """Merge measured ``rows`` into results/runs.csv by :data:`RUN_KEY` (a rerun replaces only its own rows,
    in place), with the paper's rows always present. Locked and atomic."""
    path = runs_path()
    new = typed(rows, RUN_DTYPES, table=path.name)
    with locked(path):
        return atomic_write_bytes(path, _merged_csv(path, new, RUN_DTYPES, RUN_KEY, always=paper_rows()))


def paper_table(runs: pd.DataFrame, table: str) -> pd.DataFrame:
    """Table 1 or 2 laid out as printed: a row per (training data, model, #images, #views), in the paper's
    order, and per epoch budget the paper's top-1 beside ours (both in %; ours is the mean over the seeds
    measured, and empty where none was: it is never filled in, pd.NA in the nullable Float64 of runs.csv's
    values). Columns: (epochs, "paper" | "measured")."""
    if table not in _EPOCHS:
        raise ValueError(f"table must be one of {sorted(_EPOCHS)}, got {table!r}")
    cells = runs[(runs["table"] == table) & (runs["metric"] == "linear_top1")]
    cells = cells.assign(value=cells["value"].where(cells["source"] == "paper", cells["value"] * 100))
    index = ["dataset", "method", "images", "views"]
    wide = cells.pivot_table(index=index, columns=["epochs", "source"], values="value", aggfunc="mean")
    order = pd.MultiIndex.from_frame(cells.loc[cells["source"] == "paper", index].drop_duplicates())
    columns = pd.MultiIndex.from_product([[float(e) for e in _EPOCHS[table]], ["paper", "measured"]],
                                         names=["epochs", "source"])
    wide = wide.reindex(index=order, columns=columns).astype("Float64")
    wide.index.names = ["training data", "model", "#images", "#views"]
    return wide.rename(columns=int, level=0)


def paper_margins(runs: pd.DataFrame, table: str = "table1", method: str = "S2R2") -> dict[str, list[float]]:
    """Per training set, ``method``'s printed top-1 minus the best other model's, at each epoch budget."""
    paper = runs[(runs["source"] == "paper") & (runs["table"] == table)]
    by_method = paper.pivot_table(index=["dataset", "epochs"], columns="method", values="value", sort=False)
    margin = (by_method[method] - by_method.drop(columns=method).max(axis=1)).round(1)
    return {dataset: values.tolist() for dataset, values in margin.groupby(level="dataset", sort=False)}


def styled(frame: pd.DataFrame, digits: int = 1, caption: str | None = None):
    """``frame`` for reading in a notebook: numbers to ``digits`` decimals, an empty cell as "–"."""
    style = frame.style.format(precision=digits, na_rep="–", thousands=",")
    return style.set_caption(caption) if caption else style


def measured_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The measured rows, one line per run (its table, data, method, encoder, batch, epochs, seed, lr, steps)
    and one column per metric, in % (with the commit that measured them)."""
    index = ["table", "dataset", "method", "arch", "images", "views", "epochs", "seed", "lr", "steps"]
    measured = runs[runs["source"] == "measured"]
    # groupby keeps only the runs that exist (a floor's empty lr included); pivot_table(dropna=False) would
    # build every combination of the ten index columns first, which ran out of memory at 761 rows.
    groups = measured.groupby([*index, "metric"], sort=False, dropna=False)
    wide = groups["value"].first().unstack("metric") * 100
    commits = measured.groupby(index, sort=False, dropna=False)["commit"].first()
    return wide.assign(commit=commits.reindex(wide.index)).rename_axis(columns=None)


def save_wide(frame: pd.DataFrame, name: str) -> Path:
    """A display table (e.g. :func:`paper_table`) as results/<name>.csv, its column levels joined by a
    space and its index as the first columns; atomic."""
    flat = frame.set_axis([" ".join(str(part) for part in column) if isinstance(column, tuple) else str(column)
                           for column in frame.columns], axis=1).reset_index()
    return atomic_write_bytes(output_dir("results") / f"{name}.csv",
                              flat.to_csv(index=False, lineterminator="\n").encode())
