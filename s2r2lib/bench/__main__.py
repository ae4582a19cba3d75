import importlib
import sys

from . import SUITES


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*SUITES, "gpu", "all"):
        print(f"usage: python -m s2r2lib.bench {{{','.join(SUITES)},gpu,all}} [options]\n"
              f"       python -m s2r2lib.bench SUITE --help")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "all" and argv[1:]:  # the suites take different options: one that suits one fails another
        print(f"python -m s2r2lib.bench all runs every suite at its defaults and takes no options (got "
              f"{' '.join(argv[1:])}); pass options to one suite: python -m s2r2lib.bench SUITE [options]",
              file=sys.stderr)
        return 2
    suites = SUITES if argv[0] == "all" else (argv[0],)  # all: the suites; gpu runs them itself
    status = 0
    for suite in suites:
        status |= importlib.import_module(f"s2r2lib.bench.{suite}").main(argv[1:])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
