"""Mutation testing of the core modules with mutmut: how many planted bugs does each module's own tests catch?

    python mutation/run.py                          # every module in MODULES (about an hour each here)
    python mutation/run.py --modules losses         # one module
    python mutation/run.py --modules train --sample 200   # a seeded random sample of train's mutants

Each module is mutated in a scratch copy of the checkout (mutmut writes its ``mutants/`` folder there, never
here), with only the test files listed for it in MODULES, slow tests included. The score per module,
killed / (killed + survived + timeouts), goes to results/mutation.csv with the commit, date, tool
version and wall time (and, for a sample, its 95 % Wilson interval); the surviving mutants are printed
(``--show`` prints their diffs). Mutants judged equivalent (no test can tell them apart) are listed, each with
its reason, in mutation/equivalent.md, and are left out of the score. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mutmut.stats import status_by_exit_code  # noqa: E402

from s2r2lib.bench import positive_int  # noqa: E402
from s2r2lib.results import provenance, write_table  # noqa: E402

# module -> the test files that own it (and nothing else: a run stays within about an hour here).
MODULES = {
    "losses": ["tests/test_losses.py", "tests/test_chunking.py", "tests/test_loss_contracts.py",
               "tests/test_bad_input_maths.py"],
    "views": ["tests/test_views.py", "tests/test_recipe.py", "tests/test_bad_input_maths.py"],
    "train": ["tests/test_train.py", "tests/test_batch_order.py", "tests/test_resume_methods.py", "tests/test_engine.py",
              "tests/test_bad_input_config.py", "tests/test_recipe.py"],  # (the engine draws with the config's recipe)
    "probe": ["tests/test_probe.py", "tests/test_probe_protocol.py", "tests/test_bad_input_maths.py",
              "tests/test_bad_input_config.py"],
    "results": ["tests/test_results.py", "tests/test_provenance.py", "tests/test_project.py"],
    "data": ["tests/test_data.py", "tests/test_labelled_folder.py", "tests/test_bad_input_data.py"],
    "study": ["tests/test_study.py", "tests/test_recipe.py", "tests/test_readme_sections.py"],
}
COLUMNS = ["module", "tests", "killed", "survived", "timeout", "equivalent", "no_tests", "total", "sampled",
           "score", "ci_low", "ci_high", "tool", "commit", "date", "wall_s"]
EQUIVALENT = ROOT / "mutation" / "equivalent.md"


def wilson_interval(caught: int, judged: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion: the module's score, when it was measured on a random sample
    of its mutants (the interval is about the sampling, not about mutmut)."""
    if judged == 0:
        raise ValueError("wilson_interval: judged must be positive")
    p = caught / judged
    centre = (p + z * z / (2 * judged)) / (1 + z * z / judged)
    half = z * ((p * (1 - p) / judged + z * z / (4 * judged * judged)) ** 0.5) / (1 + z * z / judged)
    return max(0.0, centre - half), min(1.0, centre + half)


def equivalent_mutants(path: Path = EQUIVALENT) -> set[str]:
    """Mutant names listed in mutation/equivalent.md: every backquoted name on a line ``- `name`: reason`` or
    ``- `name`, `name` and `name`: reason``, before the reason (whose code, such as ``topk(k)``, names none)."""
    if not path.is_file():
        return set()
    heads = (line.split("`: ", 1)[0] for line in path.read_text().splitlines() if line.startswith("- `"))
    return {name for head in heads for name in re.findall(r"`([^`]+)`", head + "`")}


def scratch_copy(module: str, tests: list[str]) -> Path:
    """A copy of the checkout's tracked files (tests such as test_project.py read the README, the notebooks and
    the environment files), configured to mutate ``module`` only."""
    scratch = Path(tempfile.mkdtemp(prefix=f"s2r2-mutation-{module}-"))
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    tracked = [name for name in listed.stdout.split("\0") if name]
    for name in tracked:
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is not copied
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, scratch / name)
    also_copy = sorted({Path(name).parts[0] for name in tracked} - {"s2r2lib"})
    config = {
        "source_paths": ["s2r2lib"],
        "only_mutate": [f"s2r2lib/{module}.py"],
        "also_copy": [name for name in also_copy if (scratch / name).exists()],
        # torch.compile cannot trace mutmut's trampolines (dynamo: "ContextVar mutation not supported")
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-m", "not compiles"],
        "pytest_add_cli_args_test_selection": tests,
        "process_isolation": "forkserver",  # torch is not fork-safe once it has run
    }
    toml = "\n[tool.mutmut]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
    (scratch / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + toml)
    return scratch


def mutant_names(scratch: Path, module: str) -> list[str]:
    """Every mutant mutmut made of ``module`` (from the .meta file a run leaves)."""
    meta = scratch / "mutants" / "s2r2lib" / f"{module}.py.meta"
    return sorted(json.loads(meta.read_text())["exit_code_by_key"]) if meta.is_file() else []


def mutmut(scratch: Path, *args: str, check: bool = True, timeout_s: float | None = None) -> str:
    """Run ``python -m mutmut *args`` in ``scratch``. Past ``timeout_s`` seconds of wall time the whole process
    group is killed (mutmut's forkserver children included, which a plain kill would leave orphaned) and a
    clear error is raised. mutmut's own timeout counts CPU seconds, so it never stops a test that waits at
    0 % CPU (a fork pool's worker that outlived its SIGTERM did so here; tests/test_results.py's closing_pool)."""
    with subprocess.Popen([sys.executable, "-m", "mutmut", *args], cwd=scratch, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise TimeoutError(f"mutmut {args[0]} in {scratch} ran past --timeout-min ({timeout_s / 60:.0f} min) "
                               f"and was stopped with its children; look for a test that waits on another "
                               f"process (py-spy dump --pid), or raise --timeout-min") from None
    if check and process.returncode != 0:
        raise RuntimeError(f"mutmut {' '.join(args)} failed in {scratch}:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return stdout


def tally(status: dict[str, str], listed: set[str]) -> tuple[int, int, list[str], set[str], int]:
    """(killed, timed out, survivors, equivalent, without tests) of mutmut's ``status`` per mutant. ``listed``
    names the mutants judged equivalent: one that survived is left out of the score, and so is one that crashed
    (as a spawned pool can on a loaded machine: no evidence either way). One that was killed or timed out counts
    as caught, as any other (a listed mutant that only makes the code slower can time out). Any other mutant that
    was not judged (a crash, a mutmut error) raises RuntimeError: the score would not be over every mutant."""
    equivalent = listed & {n for n, s in status.items() if s == "survived"}
    unjudged = sorted(n for n, s in status.items() if s not in ("killed", "survived", "timeout", "no tests"))
    crashed_listed = [n for n in unjudged if n in listed]
    if crashed_listed:
        print(f"  listed as equivalent, left out although not judged ({status[crashed_listed[0]]}): "
              f"{', '.join(crashed_listed)}")
        equivalent |= set(crashed_listed)
    unjudged = [n for n in unjudged if n not in listed]
    if unjudged:
        raise RuntimeError(f"{len(unjudged)} mutants were not judged, e.g. {unjudged[:3]} ({status[unjudged[0]]})")
    survived = sorted(n for n, s in status.items() if s == "survived" and n not in equivalent)
    return (sum(s == "killed" for s in status.values()), sum(s == "timeout" for s in status.values()), survived,
            equivalent, sum(s == "no tests" for s in status.values()))


def tested_provenance() -> dict:
    """:func:`provenance` of the scratch copy about to be taken: a score measures the tests as much as the code,
    so uncommitted edits under tests/ or mutation/ mark the commit ``+modified:tests`` too."""
    prov = provenance("cpu")
    edited = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "tests", "mutation"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()  # (tracked: copied)
    if edited:
        commit = prov["commit"]
        prov["commit"] = f"{commit},tests" if "+modified:" in commit else f"{commit}+modified:tests"
    return prov


def run_module(module: str, sample: int | None, seed: int, max_children: int, show: bool,
               timeout_s: float | None = None) -> dict:
    tests = MODULES[module]
    missing = [t for t in tests if not (ROOT / t).is_file()]
    if missing:
        raise FileNotFoundError(f"mutation: test files {missing} of module {module} do not exist; fix MODULES")
    prov = tested_provenance()  # the commit the scratch copy is taken from, not the one at the end of the run
    scratch = scratch_copy(module, tests)
    began = time.perf_counter()
    pattern = [f"s2r2lib.{module}.*"]
    if sample:
        # Generate the mutants and the test map without running any, then run a seeded sample of them.
        mutmut(scratch, "run", "--max-children", str(max_children), "s2r2lib.no_such_module.*", check=False,
               timeout_s=timeout_s)
        names = mutant_names(scratch, module)
        pattern = sorted(random.Random(seed).sample(names, min(sample, len(names))))
    mutmut(scratch, "run", "--max-children", str(max_children), *pattern, timeout_s=timeout_s)
    wall = time.perf_counter() - began
    meta = json.loads((scratch / "mutants" / "s2r2lib" / f"{module}.py.meta").read_text())["exit_code_by_key"]
    chosen = set(pattern) if sample else set(meta)
    status = {name: status_by_exit_code[meta[name]] for name in chosen}  # killed, survived, timeout, ...
    try:
        killed, timeout, survived, equivalent, no_tests = tally(status, equivalent_mutants())
    except RuntimeError as error:
        raise RuntimeError(f"mutation: {module}: {error}; see `python -m mutmut browse` in {scratch}") from None
    judged = killed + timeout + len(survived) + no_tests
    print(f"{module}: {killed} killed, {timeout} timed out, {len(survived)} survived, {len(equivalent)} "
          f"equivalent, {no_tests} without tests, of {len(status)}{' sampled' if sample else ''} "
          f"({wall:.0f} s; scratch copy {scratch})")
    for name in survived:
        print("  survived:", name)
        if show:
            print(mutmut(scratch, "show", name, check=False))
    interval = wilson_interval(killed + timeout, judged) if sample and judged else None
    return {"module": module, "tests": " ".join(tests), "killed": killed, "survived": len(survived),
            "timeout": timeout, "equivalent": len(equivalent), "no_tests": no_tests, "total": len(status),
            "sampled": f"{len(status)} of {len(meta)} (seed {seed})" if sample else "all",
            "score": f"{(killed + timeout) / judged:.4f}" if judged else "",
            "ci_low": f"{interval[0]:.4f}" if interval else "", "ci_high": f"{interval[1]:.4f}" if interval else "",
            "tool": f"mutmut {version('mutmut')}",
            "commit": prov["commit"], "date": prov["date"], "wall_s": f"{wall:.0f}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python mutation/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--sample", type=positive_int,
                        help="run a seeded random sample of this many mutants per module (at least 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-children", type=positive_int, default=1, help="mutants tested at once")
    parser.add_argument("--show", action="store_true", help="print each surviving mutant's diff")
    parser.add_argument("--timeout-min", type=float, default=240,
                        help="stop a module's mutmut run (and its children) after this many minutes of wall time")
    args = parser.parse_args(argv)
    if args.timeout_min <= 0:
        parser.error(f"--timeout-min must be positive, got {args.timeout_min}")
    for module in args.modules:
        row = run_module(module, args.sample, args.seed, args.max_children, args.show, args.timeout_min * 60)
        write_table("mutation", [{c: row[c] for c in COLUMNS}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
