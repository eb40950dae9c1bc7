"""dvc.yaml lists, for every stage, each ftbench module its script imports (directly or through other
ftbench modules), so that DVC reruns exactly the stages a code change touches, and no more."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from conftest import REPO

SRC = REPO / "src"


def _ftbench_imports(path: Path) -> set[str]:
    """ftbench modules imported at module level. A deferred import inside a function (stage.model_run's
    registry import) counts for the stages that call it, which import that module themselves."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ftbench":
            if node.module == "ftbench":  # from ftbench import report
                names.update(f"ftbench.{a.name}" for a in node.names)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "ftbench")
    return names


def _closure(script: Path) -> set[str]:
    """Source files of every ftbench module the script reaches, as repo-relative paths."""
    seen: set[str] = set()
    todo = list(_ftbench_imports(script))
    while todo:
        module = todo.pop()
        rel = "src/" + module.replace(".", "/") + ".py"
        if rel in seen or not (REPO / rel).is_file():
            continue
        seen.add(rel)
        todo.extend(_ftbench_imports(REPO / rel))
    return seen


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_imports(name):
    stage = STAGES[name]
    script = stage["cmd"].split()[1]
    deps = {d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]}
    assert script in deps
    reached = _closure(REPO / script)
    assert reached, f"{script} imports no ftbench module?"
    missing = sorted(reached - deps)
    assert not missing, f"dvc.yaml stage {name} imports {missing} but does not list them as deps"
    unused = sorted(d for d in deps if d.startswith("src/ftbench/") and d.endswith(".py") and d not in reached)
    assert not unused, f"dvc.yaml stage {name} lists {unused}, which it never imports (needless reruns)"
    absent = sorted(d for d in deps if d.startswith("src/") and not (REPO / d).exists())
    assert not absent, f"dvc.yaml stage {name} lists {absent}, which do not exist"
