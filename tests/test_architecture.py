"""The layers hold: only cli/ imports typer or rich, the core never prints or exits, start-up stays light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dashtam_cli"
UI_LIBRARIES = {"typer", "click", "rich"}
HEAVY = {"sqlalchemy", "httpx", "cryptography", "keyring", "aiosqlite", "pydantic"}


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("folder", ["core", "sandbox"])
def test_only_the_cli_layer_imports_ui_libraries(folder: str) -> None:
    """No module of core/ (or the sandbox) imports typer, click or rich, even inside a function."""
    offenders = []
    for path in _modules(PACKAGE / folder):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in UI_LIBRARIES]
    assert offenders == []


def test_core_never_prints_or_exits() -> None:
    """The core reports through return values, exceptions and logging, never print() or exit."""
    offenders = []
    for path in _modules(PACKAGE / "core"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"print", "exit", "quit"}:
                offenders.append(f"{path.name}:{node.lineno} {func.id}()")
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "exit"
                and isinstance(func.value, ast.Name)
                and func.value.id in {"sys", "os"}
            ):
                offenders.append(f"{path.name}:{node.lineno} {func.value.id}.exit()")
    assert offenders == []


def test_the_ast_check_would_catch_an_offender(tmp_path: Path) -> None:
    """The detector itself sees an import of rich inside a function."""
    source = "def f():\n    from rich.console import Console\n    print(Console)\n"
    tree = ast.parse(source)
    found = [
        n.module
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("rich")
    ]
    assert found == ["rich.console"]
    del tmp_path


def _loaded(args: list[str]) -> set[str]:
    script = (
        "import json, sys\n"
        f"sys.argv = ['dashtam', *{args!r}]\n"
        "from dashtam_cli.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(done.stderr)}


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_start_up_imports_no_heavy_library(args: list[str]) -> None:
    """`--help` and `--version` load none of the libraries that cost start-up time."""
    assert _loaded(args) & HEAVY == set()


def test_version_does_not_even_load_typer() -> None:
    """`dashtam --version` answers before the CLI framework is imported."""
    assert "typer" not in _loaded(["--version"])


def test_lazy_short_help_matches_the_commands() -> None:
    """The root help's kept lines are each command's own first docstring line."""
    import typer

    from dashtam_cli.cli.lazy import COMMANDS, load

    for name, (_, _, kept) in COMMANDS.items():
        command = load(name)
        ctx = typer.Context(command, info_name=name)
        assert command.get_short_help_str(limit=200) == kept, name
        assert command.get_help(ctx)


def test_installed_console_script_runs() -> None:
    """The installed `dashtam` script answers --version and prints paths as JSON."""
    dashtam = Path(sys.executable).parent / "dashtam"
    version = subprocess.run(
        [str(dashtam), "--version"], capture_output=True, text=True, check=True
    )
    from dashtam_cli import __version__

    assert version.stdout.strip() == f"dashtam {__version__}"
    paths = subprocess.run(
        [str(dashtam), "paths", "--format", "json"], capture_output=True, text=True, check=True
    )
    assert {row["name"] for row in json.loads(paths.stdout)} >= {"config_dir", "data_dir", "vault"}
