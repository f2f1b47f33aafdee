"""Mutants of the module-level constants, which mutmut leaves alone: `make mutate` runs it too.

mutmut only mutates code inside functions, yet the regexes, code tables, column limits,
policy numbers and dataclass defaults decide as much. This mutates each literal in a
module-level (or class-level) assignment: numbers +-1, booleans negated, strings altered,
each element of a set, list, tuple or dict dropped, and each character-class item, bound,
anchor, quantifier and alternative of a regex. Each mutant runs the unit tests of its module
(a copy of the package in build/mutate-constants/, the worktree is never touched) and is
killed when one fails. Equivalent ones are listed in tests/mutation/equivalents.txt under
"constant login_etl.<module>.<NAME>". Prints, per module:

    constant mutants <module>: N% (killed/total)
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutate import MODULES, load_equivalents, report, source_of, summary

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "mutate-constants"
# The unit tests that can see each module's constants, the most direct first (-x stops at the
# first failure, so a killed mutant costs little).
TESTS = {
    "messages": ["test_copy_line.py", "test_message_edges.py", "test_messages.py",
                 "test_known_answers.py", "test_fast_paths.py", "test_masking.py",
                 "test_json_fast_path.py", "test_envelopes.py"],
    "jsonread": ["test_json_fast_path.py", "test_fast_paths.py", "test_untrusted_input.py"],
    "masking": ["test_known_answers.py", "test_fast_path_shapes.py", "test_masking_refusals.py",
                "test_masking.py", "test_seal.py", "test_versions.py", "test_fast_paths.py",
                "test_messages.py", "test_copy_line.py"],
    "retrying": ["test_retry_decisions.py", "test_retrying.py"],
    "settings": ["test_settings_table.py", "test_settings.py", "test_masking.py",
                 "test_known_answers.py"],
    "pipeline": ["test_pipeline_settle.py", "test_worker_bookkeeping.py"],
    "pgerrors": ["test_store_errors.py", "test_connect_errors.py", "test_pipeline_settle.py",
                 "test_sqlstates.py", "test_retry_decisions.py"],
    "sqs.errors": ["test_sqs_errors.py", "test_retry_decisions.py", "test_retrying.py",
                   "test_sqs_client.py", "test_untrusted_input.py"],
}
REGEX_HINTS = ("[", "(?", "{", "^", "$", "\\d", "\\.")


@dataclass(frozen=True)
class Mutant:
    name: str
    before: str
    after: str
    source: str


# -- what is mutated ------------------------------------------------------------------------------


def regex_variants(pattern: str) -> Iterator[tuple[str, str]]:
    """(description, mutated pattern) for the parts of a regex that decide what it accepts."""
    i, depth_starts, groups = 0, [], []
    alternatives: dict[int, list[int]] = {}
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            end = i + 1
            while end < len(pattern) and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            items, j = [], i + 1
            while j < end:
                step = 2 if pattern[j] == "\\" else 1
                if j + step < end and pattern[j + step] == "-" and j + step + 1 < end:
                    step += 2
                items.append((j, j + step))
                j += step
            if len(items) > 1:
                for a, b in items:
                    yield f"class without {pattern[a:b]!r} at {a}", pattern[:a] + pattern[b:]
            for a, b in items:
                low, dash, high = pattern[a:b].partition("-")
                if dash and low.isdigit() and high.isdigit():
                    for lo, hi in ((int(low) - 1, int(high)), (int(low) + 1, int(high)),
                                   (int(low), int(high) - 1), (int(low), int(high) + 1)):
                        if 0 <= lo <= hi <= 9:
                            yield (f"range {low}-{high} -> {lo}-{hi} at {a}",
                                   pattern[:a] + f"{lo}-{hi}" + pattern[b:])
            i = end + 1
            continue
        if ch == "(":
            depth_starts.append(i)
            alternatives[i] = []
        elif ch == ")" and depth_starts:
            start = depth_starts.pop()
            groups.append((start, i))
        elif ch == "|" and depth_starts:
            alternatives[depth_starts[-1]].append(i)
        elif ch == "{":
            end = pattern.find("}", i)
            bounds = pattern[i + 1:end].split(",")
            if end > 0 and all(b.isdigit() for b in bounds):
                for k, bound in enumerate(bounds):
                    for delta in (-1, 1):
                        value = int(bound) + delta
                        if value < 0:
                            continue
                        changed = list(bounds)
                        changed[k] = str(value)
                        yield (f"bound {{{','.join(bounds)}}} -> {{{','.join(changed)}}} at {i}",
                               pattern[:i + 1] + ",".join(changed) + pattern[end:])
                i = end + 1
                continue
        elif ch in "+*" and i > 0:
            other = "*" if ch == "+" else "+"
            yield f"quantifier {ch} -> {other} at {i}", pattern[:i] + other + pattern[i + 1:]
        elif ch == "?" and i > 0 and pattern[i - 1] != "(":
            yield f"optional ? dropped at {i}", pattern[:i] + pattern[i + 1:]
        i += 1
    if pattern.startswith("^"):
        yield "anchor ^ dropped", pattern[1:]
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        yield "anchor $ dropped", pattern[:-1]
    for start, end in groups:
        cuts = alternatives.get(start, [])
        if not cuts:
            continue
        inner_start = start + 3 if pattern.startswith("(?:", start) else start + 1
        edges = [inner_start - 1, *cuts, end]
        for k in range(len(edges) - 1):
            a, b = edges[k] + 1, edges[k + 1]
            alternative = pattern[a:b]
            mutated = pattern[:a] + pattern[b + 1:] if k == 0 else pattern[:a - 1] + pattern[b:]
            yield f"alternative {alternative!r} dropped at {a}", mutated


def node_variants(node: ast.AST) -> Iterator[tuple[str, str, ast.AST]]:
    """(before, after, replacement node) for one literal node."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield repr(value), repr(not value), ast.Constant(not value)
        elif isinstance(value, int | float):
            for delta in (1, -1):
                yield repr(value), repr(value + delta), ast.Constant(value + delta)
        elif isinstance(value, str):
            yield repr(value), repr("XX" + value + "XX"), ast.Constant("XX" + value + "XX")
            if any(h in value for h in REGEX_HINTS):
                for what, pattern in regex_variants(value):
                    yield repr(value), f"{what}: {pattern!r}", ast.Constant(pattern)
        elif isinstance(value, bytes):
            yield repr(value), repr(b"XX" + value + b"XX"), ast.Constant(b"XX" + value + b"XX")
    elif isinstance(node, ast.Set | ast.List | ast.Tuple) and len(node.elts) > 1:
        for k, element in enumerate(node.elts):
            smaller = copy.copy(node)
            smaller.elts = node.elts[:k] + node.elts[k + 1:]
            yield ast.unparse(element), "(dropped)", smaller
    elif isinstance(node, ast.Dict) and len(node.keys) > 1:
        for k, key in enumerate(node.keys):
            smaller = copy.copy(node)
            smaller.keys = node.keys[:k] + node.keys[k + 1:]
            smaller.values = node.values[:k] + node.values[k + 1:]
            shown = f"{ast.unparse(key)}: {ast.unparse(node.values[k])}" if key else "**"
            yield shown, "(dropped)", smaller


def constant_statements(tree: ast.Module) -> Iterator[tuple[str, ast.stmt, int]]:
    """(name, statement, indent) of each assignment at module level or in a top-level class."""
    for stmt in tree.body:
        yield from _assignment(stmt, "", 0)
        if isinstance(stmt, ast.ClassDef):
            for inner in stmt.body:
                yield from _assignment(inner, f"{stmt.name}.", inner.col_offset)


def _assignment(stmt: ast.stmt, prefix: str, indent: int) -> Iterator[tuple[str, ast.stmt, int]]:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        yield prefix + stmt.targets[0].id, stmt, indent
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
        yield prefix + stmt.target.id, stmt, indent


def mutants(module: str, source: str) -> Iterator[Mutant]:
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    seen: set[str] = set()
    for name, stmt, indent in constant_statements(tree):
        value = stmt.value
        assert value is not None
        if isinstance(value, ast.Call) and ast.unparse(value.func) in ("TypeVar", "NewType"):
            continue
        if isinstance(value, ast.Subscript | ast.BinOp) and not any(
                isinstance(n, ast.Constant) for n in ast.walk(value)):
            # a type alias (tuple[A, B], A | B): no behaviour to change
            continue
        where = _contexts(value)
        for target in ast.walk(value):
            for before, after, replacement in node_variants(target):
                before = where.get(id(target), "") + before
                mutated_stmt = _replace(stmt, target, replacement)
                text = ast.unparse(mutated_stmt)
                text = "".join(" " * indent + ln + "\n" for ln in text.splitlines())
                assert stmt.end_lineno is not None
                new_source = "".join(lines[:stmt.lineno - 1]) + text + "".join(lines[stmt.end_lineno:])
                if new_source in seen or ast.dump(ast.parse(new_source)) == ast.dump(tree):
                    continue
                seen.add(new_source)
                yield Mutant(f"constant login_etl.{module}.{name}", before, after, new_source)


def _contexts(value: ast.expr) -> dict[int, str]:
    """For each node, where it sits: `[<dict key>] <keyword>=`, so that equal literals in
    different places are told apart (in the report and in the list of equivalents)."""
    found: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        found[id(node)] = prefix
        if isinstance(node, ast.Dict):
            for key, item in zip(node.keys, node.values, strict=True):
                if key is not None:
                    visit(key, prefix)
                visit(item, f"{prefix}[{ast.unparse(key) if key else '**'}] ")
            return
        if isinstance(node, ast.keyword):
            visit(node.value, f"{prefix}{node.arg}=")
            return
        for child in ast.iter_child_nodes(node):
            visit(child, prefix)

    visit(value, "")
    return found


def _replace(stmt: ast.stmt, target: ast.AST, replacement: ast.AST) -> ast.stmt:
    """A copy of stmt with target replaced (the original tree stays as it was)."""
    index = next(k for k, node in enumerate(ast.walk(stmt)) if node is target)
    fresh = copy.deepcopy(stmt)
    twin = list(ast.walk(fresh))[index]

    class Swap(ast.NodeTransformer):
        def visit(self, node: ast.AST) -> ast.AST:
            if node is twin:
                return replacement
            return self.generic_visit(node)

    return Swap().visit(fresh)  # type: ignore[no-any-return]


# -- running the tests -----------------------------------------------------------------------------


def stage(workdir: Path) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(ROOT / "service" / "login_etl", workdir / "service" / "login_etl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "tests").mkdir()
    for name in ("__init__.py", "conftest.py"):
        shutil.copy2(ROOT / "tests" / name, workdir / "tests" / name)
    shutil.copytree(ROOT / "tests" / "unit", workdir / "tests" / "unit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntimeout = 300\n")


# Imported once here and inherited by every forked test run (most of a run's start-up time).
HEAVY = ("pytest", "hypothesis", "psycopg", "psycopg_pool", "boto3", "botocore.exceptions",
         "cryptography.hazmat.primitives.ciphers.aead", "orjson", "structlog", "tenacity",
         "prometheus_client", "click", "rich.console")


def start(workdir: Path, module: str, mutant: Mutant) -> int:
    """Fork a run of the module's unit tests against the mutant; returns the child's pid."""
    (workdir / "service" / "login_etl" / source_of(module)).write_text(mutant.source, encoding="utf-8")
    tests = [f"tests/unit/{name}" for name in TESTS[module] if (workdir / "tests" / "unit" / name).exists()]
    pid = os.fork()
    if pid:
        return pid
    try:
        os.chdir(workdir)
        sys.path.insert(0, str(workdir / "service"))
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        # a mutated regex can backtrack for ever: a hang counts as a kill
        signal.alarm(600)
        import pytest

        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])
        os._exit(int(code))
    except BaseException:
        os._exit(99)


def score(module: str, jobs: int) -> tuple[int, int, list[Mutant]]:
    original = (ROOT / "service" / "login_etl" / source_of(module)).read_text(encoding="utf-8")
    equivalents = load_equivalents()
    found = list(mutants(module, original))
    todo = [m for m in found if not any(e.where == m.name and e.removed == (m.before,)
                                        and e.added == (m.after,) for e in equivalents)]
    free = [BUILD / module / f"w{k}" for k in range(jobs)]
    for workdir in free:
        stage(workdir)
    started = time.monotonic()
    print(f"constants of {module}: {len(found)} mutants, {len(found) - len(todo)} equivalent ...",
          flush=True)
    running: dict[int, tuple[Mutant, Path]] = {}
    survivors: list[Mutant] = []
    done = 0
    queue = list(todo)
    while queue or running:
        while queue and free:
            workdir = free.pop()
            mutant = queue.pop(0)
            running[start(workdir, module, mutant)] = (mutant, workdir)
        pid, status = os.wait()
        mutant, workdir = running.pop(pid)
        (workdir / "service" / "login_etl" / source_of(module)).write_text(original, encoding="utf-8")
        free.append(workdir)
        done += 1
        if os.waitstatus_to_exitcode(status) == 0:
            survivors.append(mutant)
        if done % 10 == 0 or done == len(todo):
            print(f"  {done}/{len(todo)} ({len(survivors)} survived, "
                  f"{time.monotonic() - started:.0f} s)", flush=True)
    return len(todo) - len(survivors), len(todo), survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES),
                        help=f"modules of login_etl (default: {' '.join(MODULES)})")
    parser.add_argument("--jobs", type=int, default=2, help="test runs at once (default 2)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--fail-under", type=float, default=90.0)
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"not a module this measures: {', '.join(unknown)}")
    if args.list:
        for module in args.modules:
            source = (ROOT / "service" / "login_etl" / source_of(module)).read_text(encoding="utf-8")
            for m in mutants(module, source):
                print(f"{m.name}: {m.before} -> {m.after}")
        return 0
    os.environ["HYPOTHESIS_PROFILE"] = "mutate"
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    for name in HEAVY:
        importlib.import_module(name)
    lines, failed = [], False
    for module in args.modules:
        killed_count, total, survivors = score(module, args.jobs)
        for m in survivors:
            print(f"  survived: {m.name}\n    - {m.before}\n    + {m.after}")
        failed |= report(lines, f"constant mutants {module}", killed_count, total, args.fail_under)
    return summary(lines, failed)


if __name__ == "__main__":
    sys.exit(main())
