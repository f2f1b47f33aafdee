"""Mutation score of the unit tests over the modules that decide what is stored: `make mutate`.

For each module, mutmut mutates a copy of the package (in build/mutate/<module>/, the worktree
is never touched) and runs only tests/unit against each mutant. Equivalent mutants (listed
with the reason in tests/mutation/equivalents.txt, matched by function and changed lines, so
renumbering does not matter) are left out of the score. Prints, per module:

    mutation score <module>: N% (killed/total)

and the surviving mutants as diffs. Exit 1 when a module is under --fail-under (default 90).
Not part of `make test`: it takes tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "service" / "login_etl"
BUILD = ROOT / "build" / "mutate"
EQUIVALENTS = ROOT / "tests" / "mutation" / "equivalents.txt"
MODULES = ("messages", "jsonread", "masking", "retrying", "settings", "pipeline", "pgerrors", "sqs.errors")


def source_of(module: str) -> str:
    """A module's file under login_etl/: `sqs.errors` -> `sqs/errors.py`."""
    return module.replace(".", "/") + ".py"
# mutmut's exit codes of a test run against a mutant: a failing test (1, 3) or a hang kills it.
KILLED = {1, 3, 24, -24, 36, 152, 255}


@dataclass(frozen=True)
class Equivalent:
    where: str
    removed: tuple[str, ...]
    added: tuple[str, ...]
    why: str


def load_equivalents(path: Path = EQUIVALENTS) -> list[Equivalent]:
    """Blocks separated by blank lines: where, `- old` / `+ new` lines, `why: reason`."""
    found: list[Equivalent] = []
    if not path.exists():
        return found
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    for block in blocks:
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines:
            continue
        where, rest = lines[0].strip(), lines[1:]
        removed = tuple(ln[2:].strip() for ln in rest if ln.startswith("- "))
        added = tuple(ln[2:].strip() for ln in rest if ln.startswith("+ "))
        why = " ".join(ln[4:].strip() for ln in rest if ln.startswith("why:"))
        if not why:
            raise SystemExit(f"{path}: the entry for {where} gives no reason (why: ...)")
        found.append(Equivalent(where, removed, added, why))
    return found


def changed_lines(old: str, new: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    diff = list(difflib.ndiff(old.splitlines(), new.splitlines()))
    removed = tuple(ln[2:].strip() for ln in diff if ln.startswith("- "))
    added = tuple(ln[2:].strip() for ln in diff if ln.startswith("+ "))
    return removed, added


def mutant_diffs(mutated_module: Path, module: str) -> dict[str, tuple[str, tuple[str, ...],
                                                                       tuple[str, ...]]]:
    """mutant name -> (function, removed lines, added lines), from mutmut's mutated copy."""
    source = mutated_module.read_text(encoding="utf-8")
    tree = ast.parse(source)
    functions: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            functions[node.name] = ast.get_source_segment(source, node) or ""
    diffs = {}
    for name, text in functions.items():
        base, _, number = name.partition("__mutmut_")
        if number == "orig":
            continue
        original = functions.get(f"{base}__mutmut_orig", "")
        body_old = original.split("\n", 1)[1] if "\n" in original else original
        body_new = text.split("\n", 1)[1] if "\n" in text else text
        removed, added = changed_lines(body_old, body_new)
        diffs[f"login_etl.{module}.{name}"] = (f"login_etl.{module}.{base}", removed, added)
    return diffs


def stage(module: str, workdir: Path) -> None:
    """A copy of the package under src/ (mutmut's layout) and of the unit tests."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "tests").mkdir(parents=True)
    shutil.copytree(PACKAGE, workdir / "src" / "login_etl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "conftest.py"):
        shutil.copy2(ROOT / "tests" / name, workdir / "tests" / name)
    # These read docs/, deploy/ and the README, which the copy does not hold (and they decide
    # nothing a mutant could change).
    shutil.copytree(ROOT / "tests" / "unit", workdir / "tests" / "unit",
                    ignore=shutil.ignore_patterns("__pycache__", "test_architecture_doc.py",
                                                  "test_ops_files.py"))
    (workdir / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["src/login_etl"]\n'
        f'only_mutate = ["src/login_etl/{source_of(module)}"]\n'
        'pytest_add_cli_args_test_selection = ["tests/unit"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n\n'
        "[tool.pytest.ini_options]\n"
        "timeout = 300\n",
        encoding="utf-8")


def score(module: str, max_children: int, equivalents: list[Equivalent]) -> tuple[int, int, list[str]]:
    workdir = BUILD / module
    stage(module, workdir)
    log = workdir / "mutmut.log"
    started = time.monotonic()
    print(f"mutating {module} (log: {log.relative_to(ROOT)}) ...", flush=True)
    env = {**os.environ, "HYPOTHESIS_PROFILE": "mutate"}
    with log.open("w") as out:
        child = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children",
                                  str(max_children)], cwd=workdir, stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                rc = child.wait(timeout=60)
                break
            except subprocess.TimeoutExpired:
                # mutmut's own progress is a spinner in the log: its latest count, once a minute
                counts = re.findall(r"(\d+)/(\d+) ", log.read_text(errors="replace")[-2000:])
                if counts:
                    print(f"  {module}: {counts[-1][0]}/{counts[-1][1]} mutants run, "
                          f"{time.monotonic() - started:.0f} s", flush=True)
    meta_path = workdir / "mutants" / "src" / "login_etl" / f"{source_of(module)}.meta"
    if rc != 0 or not meta_path.exists():
        print(f"  mutmut failed on {module} (exit {rc}); the end of {log}:")
        tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-15:]
        print("\n".join("    " + line for line in tail))
        return 0, -1, []
    codes: dict[str, int | None] = json.loads(meta_path.read_text())["exit_code_by_key"]
    diffs = mutant_diffs(workdir / "mutants" / "src" / "login_etl" / source_of(module), module)
    killed = total = 0
    survivors: list[str] = []
    used: set[Equivalent] = set()
    for name, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
        where, removed, added = diffs.get(name, ("", (), ()))
        match = next((e for e in equivalents if e.where == where and e.removed == removed
                      and e.added == added), None)
        if match is not None:
            used.add(match)
            continue
        total += 1
        if code in KILLED:
            killed += 1
        else:
            state = "no tests" if code in (5, 33) else "survived" if code == 0 else f"exit {code}"
            survivors.append(f"{name} ({state})\n" + "".join(
                [f"    - {ln}\n" for ln in removed] + [f"    + {ln}\n" for ln in added]))
    stale = [e for e in equivalents if e.where.startswith(f"login_etl.{module}.") and e not in used]
    for entry in stale:
        print(f"  note: equivalent entry no longer matches a mutant: {entry.where} "
              f"{entry.removed} -> {entry.added}")
    print(f"  {module}: {len(codes)} mutants, {len(codes) - total} equivalent, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return killed, total, survivors


def _natural(name: str) -> tuple[str, int]:
    base, _, number = name.partition("__mutmut_")
    return base, int(number) if number.isdigit() else -1


def report(lines: list[str], label: str, killed: int, total: int, fail_under: float) -> bool:
    """Prints one module's score as it comes and keeps it for the summary; True when it is
    under the bar. mutate_constants.py reports the same way."""
    percent = 100.0 * killed / total if total else 100.0
    lines.append(f"{label}: {percent:.0f}% ({killed}/{total})")
    print(lines[-1], flush=True)
    return percent < fail_under


def summary(lines: list[str], failed: bool) -> int:
    """The scores together again at the end (the survivors' listing pushes them apart); the
    exit code."""
    if len(lines) > 1:
        print("\n".join(lines))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES),
                        help=f"modules of login_etl to mutate (default: {' '.join(MODULES)})")
    parser.add_argument("--max-children", type=int, default=2,
                        help="parallel test runs (default 2: the machine has two cores)")
    parser.add_argument("--fail-under", type=float, default=90.0)
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"not a module this measures: {', '.join(unknown)}")
    equivalents = load_equivalents()
    lines, failed = [], False
    for module in args.modules:
        killed, total, survivors = score(module, args.max_children, equivalents)
        if total < 0:
            lines.append(f"mutation score {module}: not measured (mutmut failed)")
            print(lines[-1], flush=True)
            failed = True
            continue
        for survivor in survivors:
            print("  survived: " + survivor, end="")
        failed |= report(lines, f"mutation score {module}", killed, total, args.fail_under)
    return summary(lines, failed)


if __name__ == "__main__":
    sys.exit(main())
