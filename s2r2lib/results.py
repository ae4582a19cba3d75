"""Where outputs go, how every number says where it came from, and writes that survive a kill.

Output folders (each overridable by an environment variable, which is how the tests keep a test
run from touching the committed files):

  figures  S2R2_FIGURES_DIR  default <project>/figures
  results  S2R2_RESULTS_DIR  default <project>/results
  records  S2R2_RECORDS_DIR  default <project>/build/records   (numbers a notebook records for tests)
  runs     S2R2_RUNS_DIR     default <project>/build/runs      (the notebooks' training runs)

<project> is the nearest folder at or above the working directory that holds ``s2r2lib/`` and
``pyproject.toml`` (notebooks run in ``notebooks/``); outside a checkout it is the working directory.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

_DIRS = {
    "figures": ("S2R2_FIGURES_DIR", "figures"),
    "results": ("S2R2_RESULTS_DIR", "results"),
    "records": ("S2R2_RECORDS_DIR", "build/records"),
    "runs": ("S2R2_RUNS_DIR", "build/runs"),
}


def project_dir(start: Path | None = None) -> Path:
    """The checkout that holds s2r2lib/ at or above ``start`` (default: the working directory)."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "s2r2lib").is_dir():
            return folder
    return start


def output_dir(kind: str) -> Path:
    """The folder for ``kind`` (figures, results, records or runs), created if missing."""
    if kind not in _DIRS:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {sorted(_DIRS)}")
    env, default = _DIRS[kind]
    folder = Path(os.environ[env]) if os.environ.get(env) else project_dir() / default
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def git_commit(short: bool = True) -> str:
    """The checkout's commit, ``+dirty`` when tracked code differs from it (outputs in results/ and
    figures/ do not count); $S2R2_COMMIT where set (a copy of the checkout without git, e.g. on a lent
    GPU machine); ``unknown`` outside git."""
    if os.environ.get("S2R2_COMMIT"):
        return os.environ["S2R2_COMMIT"]
    cwd = project_dir()
    try:
        rev = subprocess.run(["git", "rev-parse", "--short" if short else "--verify", "HEAD"],
                             cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!results", ":!figures"],
                               cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
              columns: list[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as a CSV atomically; columns default to the keys in first-seen order."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_bytes(path, buffer.getvalue().encode())


def record(notebook: str, **numbers: Any) -> Path:
    """Save the key numbers a notebook computed, as JSON in the records folder, for the tests to check."""
    path = output_dir("records") / f"{notebook}.json"
    return atomic_write_bytes(path, json.dumps(numbers, indent=2, sort_keys=True).encode())


def read_record(notebook: str) -> dict[str, Any]:
    """The numbers :func:`record` saved for ``notebook``."""
    return json.loads((output_dir("records") / f"{notebook}.json").read_text())


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV written by :func:`write_csv`; a malformed line raises a ValueError naming it."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = []
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                raise ValueError(f"{path}:{reader.line_num}: expected {len(reader.fieldnames)} fields "
                                 f"({', '.join(reader.fieldnames)}); fix or delete that line")
            rows.append(row)
    return rows


def upsert_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], key: tuple[str, ...]) -> Path:
    """Merge ``rows`` into the CSV at ``path``: a row replaces the old one with the same ``key`` values,
    every other old row is kept (a CPU run leaves the committed GPU rows alone). Atomic."""
    rows = [{name: "" if value is None else str(value) for name, value in row.items()} for row in rows]
    for row in rows:
        missing = [name for name in key if name not in row]
        if missing:
            raise ValueError(f"upsert_csv: row lacks key column(s) {missing}: {row}")
    old = read_csv(path) if Path(path).exists() else []
    new_keys = {tuple(row[name] for name in key) for row in rows}
    kept = [row for row in old if tuple(row.get(name, "") for name in key) not in new_keys]
    columns = list(dict.fromkeys([*(name for row in old for name in row), *(name for row in rows for name in row)]))
    return write_csv(path, [*kept, *rows], columns)


# --- results/runs.csv: the paper's numbers and ours, one tidy table ---------------------------------

RUN_COLUMNS = ["table", "arch", "dataset", "method", "images", "views", "epochs", "seed", "lr", "steps", "views_seen",
               "metric", "value", "source", "protocol", "commit", "device", "train_s", "wall_s", "date"]
RUN_KEY = ("table", "arch", "dataset", "method", "images", "views", "epochs", "seed", "lr", "steps", "metric", "source")

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


def paper_rows() -> list[dict[str, str]]:
    """Every cell of the paper's Tables 1 and 2 as a ``source=paper`` row of runs.csv."""
    rows = []
    for table, arch, dataset, method, images, views, cells in _PAPER_TABLES:
        for epochs, value in zip(_EPOCHS[table], cells.split(), strict=True):
            rows.append({"table": table, "arch": arch, "dataset": dataset, "method": method, "images": images,
                         "views": views, "epochs": epochs, "seed": "", "metric": "linear_top1", "value": value,
                         "source": "paper", "protocol": PAPER_PROTOCOL, "commit": "", "device": "",
                         "wall_s": "", "date": ""})
    return rows


def runs_path() -> Path:
    return output_dir("results") / "runs.csv"


def read_runs() -> list[dict[str, str]]:
    """The rows of results/runs.csv (the paper's rows when the file does not exist yet)."""
    path = runs_path()
    if not path.exists():
        return [{k: str(v) for k, v in row.items()} for row in paper_rows()]
    rows = read_csv(path)
    if rows and not set(rows[0]) <= set(RUN_COLUMNS):
        raise ValueError(f"{path}: columns {list(rows[0])} are not runs.csv's {RUN_COLUMNS}")
    return rows


def write_runs(rows: Iterable[Mapping[str, Any]]) -> Path:
    """Merge measured ``rows`` into results/runs.csv by key (a rerun replaces only its own rows), with the
    paper's rows always present. Atomic."""
    rows = list(rows)
    for row in rows:
        unknown = set(row) - set(RUN_COLUMNS)
        if unknown:
            raise ValueError(f"runs.csv has no column(s) {sorted(unknown)}; its columns are {RUN_COLUMNS}")
    path = runs_path()
    if not path.exists():
        write_csv(path, paper_rows(), RUN_COLUMNS)
    present = {tuple(row.get(k, "") for k in RUN_KEY) for row in read_runs()}  # also refuses a malformed file
    missing_paper = [row for row in paper_rows() if tuple(str(row.get(k, "")) for k in RUN_KEY) not in present]
    return upsert_csv(path, [{c: row.get(c, "") for c in RUN_COLUMNS} for row in [*missing_paper, *rows]], RUN_KEY)


def paper_table(rows: list[Mapping[str, str]], table: str) -> tuple[list[str], list[list[str]]]:
    """Table 1 or 2 laid out as printed, each cell "paper / measured" ("paper / –" where we have no
    measurement: it is never filled in). Returns (header, body rows)."""
    epochs = [str(e) for e in _EPOCHS[table]]
    header = ["training data", "model", "#images", "#views", *epochs]
    cells: dict[tuple, dict[str, dict[str, str]]] = {}
    for row in rows:
        if row["table"] != table or row["metric"] != "linear_top1":
            continue
        key = (row["dataset"], row["method"], str(row["images"]), str(row["views"]))
        cells.setdefault(key, {}).setdefault(str(row["epochs"]), {})[row["source"]] = row["value"]
    body = []
    for key, by_epoch in cells.items():
        body.append([*key, *(f"{by_epoch.get(e, {}).get('paper', '')} / {by_epoch.get(e, {}).get('measured', '–')}"
                             for e in epochs)])
    return header, body


def paper_margins(rows: list[Mapping[str, str]], table: str = "table1", method: str = "S2R2") -> dict[str, list[float]]:
    """Per training set, ``method``'s printed top-1 minus the best other model's, at each epoch budget."""
    paper = [row for row in rows if row["source"] == "paper" and row["table"] == table]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for row in paper:
        cells.setdefault((row["dataset"], str(row["epochs"])), {})[row["method"]] = float(row["value"])
    margins: dict[str, list[float]] = {}
    for (dataset, _), by_method in cells.items():
        others = [value for name, value in by_method.items() if name != method]
        margins.setdefault(dataset, []).append(round(by_method[method] - max(others), 1))
    return margins


def format_rows(rows: list[Mapping[str, Any]], columns: list[str]) -> str:
    """Rows as an aligned plain-text table."""
    lines = [[str(c) for c in columns], *[[str(row.get(c, "")) for c in columns] for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines)
