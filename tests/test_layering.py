"""Imports go one way: the service — its app, the `tuwen` command and its torch-free subcommands — never
imports torch or training code (README, "Layout").

The dynamic checks run the real entry points in a fresh interpreter (this test process may hold torch,
loaded by other tests) and read what is left in ``sys.modules``; the static one also catches imports
inside functions, which only run on paths a test may not take.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What `tuwen` may load of training: the registrar of `tuwen export` (an entry point) and its packages.
# Anything more, torch above all, would be paid by every `tuwen serve` and `tuwen embed --bundle`.
EXPORT_REGISTRAR = {"training", "training.export", "training.export.cli"}

# Runs a snippet, then prints the loaded module names as the last line of stdout.
PROBE = """
import json, sys
{snippet}
print()
print(json.dumps(sorted(sys.modules)))
"""

# `tuwen ARGS` the way the console script runs it; --help and argparse errors exit through SystemExit.
RUN_CLI = """
from service.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
"""


def _forbidden(modules: list[str], allowed: Collection[str] = ()) -> list[str]:
    heavy = ("torch", "training")
    return [m for m in modules if m.split(".")[0] in heavy and m not in allowed]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    # default settings: none of the caller's TUWEN_* variables
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUWEN_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _modules_after(snippet: str) -> list[str]:
    done = _run(PROBE.format(snippet=snippet))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_building_the_app_imports_no_torch_and_no_training() -> None:
    modules = _modules_after(
        "from service.app import create_app\n"
        "from service.config import Settings\n"
        "create_app(Settings()).openapi()  # construction only: the lifespan (engines, Milvus) never runs"
    )
    assert "service.app" in modules
    assert _forbidden(modules) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["serve", "--help"],
        ["embed", "--help"],
        ["build-engines", "--help"],
        ["export", "--help"],  # training's command: registered and described without torch
    ],
    ids=" ".join,
)
def test_the_tuwen_command_imports_no_torch(argv: list[str]) -> None:
    modules = _modules_after(RUN_CLI.format(argv=argv))
    assert "service.cli" in modules
    assert _forbidden(modules, allowed=EXPORT_REGISTRAR) == []


def test_build_engines_runs_on_the_service_alone() -> None:
    # runs the command's imports (engine build and verification), then fails on the missing bundle
    modules = _modules_after(RUN_CLI.format(argv=["build-engines", "/nonexistent/bundle"]))
    assert {"service.engines.tensorrt_build", "service.engines.verify"} <= set(modules)
    assert _forbidden(modules, allowed=EXPORT_REGISTRAR) == []


def test_settings_and_the_indexers_ray_tasks_import_no_pymilvus() -> None:
    """Every Ray worker of `tuwen index` and every `tuwen` command imports Settings; pymilvus (~0.4 s)
    is for the store alone."""
    modules = _modules_after("import service.config, service.indexing.pipeline, service.store")
    assert "service.indexing.pipeline" in modules
    assert [m for m in modules if m.split(".")[0] == "pymilvus"] == []
    loaded = _modules_after("from service.store import VectorStore")
    assert "pymilvus" in loaded and "service.store.milvus" in loaded


# The runtime images install the service without training/, while the project's metadata still declares
# training's entry points; blocking the package here is what its absence looks like to the import system.
WITHOUT_TRAINING = """
import contextlib, io, json, sys
sys.modules["training"] = None
from service.cli import build_parser, main
parser = build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = main(["embed", "--checkpoint", "x.pt", "--arch", "tiny-vit", "--text", "你好"])
print(json.dumps({"commands": commands, "code": code, "err": err.getvalue()}))
"""


def test_tuwen_works_where_training_is_not_installed() -> None:
    done = _run(WITHOUT_TRAINING)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert {"embed", "serve", "ingest", "build-engines"} <= set(result["commands"])
    assert "export" not in result["commands"]
    assert result["code"] == 2
    assert "training package" in result["err"] and "Traceback" not in result["err"]


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_service_module_imports_torch_or_training_anywhere() -> None:
    """Also imports inside functions, which the checks above reach only on the paths they run."""
    found = {
        str(path.relative_to(REPO)): bad
        for path in sorted((REPO / "service").rglob("*.py"))
        if (bad := _forbidden(_imports(path)))
    }
    assert found == {}
