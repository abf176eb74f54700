"""The layers hold: only cli/ imports typer or rich, the core never prints or exits, start-up stays light."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dashtam_cli"
UI_LIBRARIES = {"typer", "click", "rich"}
HEAVY = {"sqlalchemy", "httpx", "cryptography", "keyring", "aiosqlite", "pydantic"}
OUTPUT_CALLS = {"print", "exit", "quit", "input", "breakpoint"}
EXIT_ATTRIBUTES = {("sys", "exit"), ("os", "_exit"), ("os", "abort")}
STREAMS = {"stdout", "stderr", "stdin", "__stdout__", "__stderr__"}


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _string_argument(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def ui_imports(tree: ast.AST) -> list[str]:
    """Every import of a UI library in ``tree``, in any form and at any depth."""
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called in {"import_module", "__import__"} and (name := _string_argument(node)):
                names = [name]
        found += [f"{getattr(node, 'lineno', 0)}: {n}" for n in names]
    return [f for f in found if f.split(": ", 1)[1].split(".")[0] in UI_LIBRARIES]


def _offences(node: ast.AST) -> list[str]:
    """What ``node`` itself does that the core must not: print, prompt or exit."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return [f"{node.func.id}()"] if node.func.id in OUTPUT_CALLS else []
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        pair = (node.value.id, node.attr)
        if pair in EXIT_ATTRIBUTES or (node.value.id == "sys" and node.attr in STREAMS):
            return [f"{node.value.id}.{node.attr}"]
        return []
    if isinstance(node, ast.ImportFrom) and node.module in {"sys", "os"}:
        return [
            f"from {node.module} import {alias.name}"
            for alias in node.names
            if (node.module, alias.name) in EXIT_ATTRIBUTES or alias.name in STREAMS
        ]
    if isinstance(node, ast.Raise) and node.exc is not None:
        raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        return (
            ["raise SystemExit"]
            if isinstance(raised, ast.Name) and raised.id == "SystemExit"
            else []
        )
    return []


def prints_or_exits(tree: ast.AST) -> list[str]:
    """Every way ``tree`` could print, prompt or end the process."""
    return [
        f"{getattr(node, 'lineno', 0)}: {offence}"
        for node in ast.walk(tree)
        for offence in _offences(node)
    ]


def _scan(folder: str, detector: object) -> list[str]:
    assert callable(detector)
    paths = _modules(PACKAGE / folder)
    assert paths, f"no modules under {folder}/"
    offenders: list[str] = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        offenders += [f"{path.relative_to(PACKAGE)}:{hit}" for hit in detector(tree)]
    return offenders


@pytest.mark.parametrize("folder", ["core", "sandbox"])
def test_only_the_cli_layer_imports_ui_libraries(folder: str) -> None:
    """No module of core/ (or the sandbox) imports typer, click or rich, even inside a function."""
    assert _scan(folder, ui_imports) == []


# What only the core does: opening the vault, SQL, HTTP. (The CLI may name the
# vault's option types, e.g. OpenOptions, to pass them to the core.)
_CORE_ONLY = (
    "dashtam_cli.core.vault.vault.open_vault",
    "dashtam_cli.core.vault.vault.Vault",
    "dashtam_cli.core.vault.db",
    "sqlalchemy",
    "httpx",
)


def core_only_imports(tree: ast.AST) -> list[str]:
    """Every import in ``tree`` of the vault, SQL or HTTP (the CLI asks the core instead)."""
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        found += [
            f"{getattr(node, 'lineno', 0)}: {name}"
            for name in names
            if any(name == c or name.startswith(c + ".") for c in _CORE_ONLY)
        ]
    return found


def test_the_cli_never_opens_the_vault_or_the_network_itself() -> None:
    """A command calls one core function and renders its result: no vault, SQL or HTTP in cli/."""
    assert _scan("cli", core_only_imports) == []
    clean = ast.parse("from dashtam_cli.core import sync\nimport json\n")
    dirty = ast.parse(
        "def f():\n    from dashtam_cli.core.vault.vault import open_vault\n"
        "import httpx.main\nfrom sqlalchemy import select\n"
    )
    assert core_only_imports(clean) == []
    assert len(core_only_imports(dirty)) == 3  # open_vault, httpx, sqlalchemy


def test_core_never_prints_or_exits() -> None:
    """The core reports through return values, exceptions and logging, never print() or exit."""
    assert _scan("core", prints_or_exits) == []


def test_the_detectors_catch_every_form() -> None:
    """The detectors used above see each way of breaking the rules, and pass clean code."""
    source = textwrap.dedent(
        """
        import rich
        import typer.main as tm
        from click import echo
        from rich.console import Console
        import importlib
        def f():
            from rich.table import Table
            importlib.import_module("typer")
            __import__("click.core")
            print("x")
            exit(1)
            quit()
            input("?")
            sys.exit(2)
            os._exit(3)
            sys.stdout.write("x")
            raise SystemExit(4)
        def g():
            raise SystemExit
        from sys import exit as leave
        """
    )
    tree = ast.parse(source)
    imports = [hit.split(": ", 1)[1] for hit in ui_imports(tree)]
    assert imports == [
        "rich",
        "typer.main",
        "click",
        "rich.console",
        "rich.table",
        "typer",
        "click.core",
    ]
    exits = [hit.split(": ", 1)[1] for hit in prints_or_exits(tree)]
    assert sorted(exits) == sorted(
        [
            "print()",
            "exit()",
            "quit()",
            "input()",
            "sys.exit",
            "os._exit",
            "sys.stdout",
            "raise SystemExit",
            "raise SystemExit",
            "from sys import exit",
        ]
    )
    clean = ast.parse(
        "import logging\nimport richard\nfrom . import rich\n"
        "log = logging.getLogger(__name__)\ndef f(printer):\n    printer.print('x')\n"
    )
    assert ui_imports(clean) == []
    assert prints_or_exits(clean) == []


def _run_entry(args: list[str], *, after: str = "") -> tuple[int, str, set[str]]:
    """Run the console script's entry with ``args`` in a fresh interpreter (then ``after``).

    Returns the exit code, stdout and the top-level packages it loaded.
    """
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.argv = ["dashtam", *{args!r}]
        from dashtam_cli.cli.entry import main
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
        # after
        sys.stdout.flush()
        # A None entry is a module kept out (the entry point keeps httpx._main out).
        loaded = sorted(name for name, module in sys.modules.items() if module is not None)
        sys.stderr.write(json.dumps({{"code": code, "modules": loaded}}))
        """
    ).replace("# after\n", f"{after}\n")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stderr.splitlines()[-1])
    return report["code"], done.stdout, {name.split(".")[0] for name in report["modules"]}


@pytest.mark.parametrize(
    ("args", "expected"), [(["--help"], "Usage: dashtam"), (["--version"], "dashtam ")]
)
def test_start_up_imports_no_heavy_library(args: list[str], expected: str) -> None:
    """`--help` and `--version` load none of the libraries that cost start-up time."""
    code, stdout, loaded = _run_entry(args)
    assert code == 0
    assert stdout.startswith(expected)
    assert loaded & HEAVY == set()


def test_version_does_not_even_load_typer() -> None:
    """`dashtam --version` answers before the CLI framework is imported."""
    code, stdout, loaded = _run_entry(["--version"])
    assert code == 0
    assert stdout.startswith("dashtam ")
    assert loaded & {"typer", "click", "rich"} == set()


# What a query of a synced vault must not load: the network stack (httpx brings
# rich, pygments and click with it when they are installed), the terminal UI
# (machine formats print without it), and the OS keyring (the key is in the environment).
QUERY_NEVER_LOADS = {
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "rich",
    "pygments",
    "markdown_it",
    "click",
    "keyring",
}


@pytest.mark.usefixtures("master_key")
def test_a_query_of_a_synced_vault_loads_no_network_or_ui_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`accounts list --format json --offline` on a synced vault: no httpx, rich or keyring.

    Nor does pydantic scan the installed distributions for plugins: the
    entry point turns them off before any model is built.
    """
    import respx
    from schwab_support import BASE_URL, add_connection, mock_connection_api

    monkeypatch.setenv("DASHTAM_SCHWAB_BASE_URL", BASE_URL)
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        add_connection("brokerage", "token-b")
        mock_connection_api(router, "token-b", ["11111111", "22222222"])
        code, _, _ = _run_in_process(["sync", "--quiet"])
        assert code == 0
    code, stdout, loaded = _run_entry(["accounts", "list", "--format", "json", "--offline"])
    assert code == 0
    assert sorted(row["number"] for row in json.loads(stdout)) == ["****1111", "****2222"]
    assert loaded & QUERY_NEVER_LOADS == set()
    # The transactions, all of them or of a kind or a provider's type: the check of
    # --type reads every provider's types without importing any provider's client.
    for types in ([], ["--type", "trade"], ["--type", "TRADE"]):
        code, stdout, loaded = _run_entry(
            ["transactions", "list", "--format", "jsonl", "--offline", *types]
        )
        assert code == 0
        assert stdout.count("\n") > 0, types
        assert loaded & QUERY_NEVER_LOADS == set(), types
    assert {"sqlalchemy", "pydantic", "cryptography"} <= loaded  # the check is not blind
    code, stdout, _ = _run_entry(
        ["accounts", "list", "--format", "json", "--offline"],
        after="from pydantic.plugin import _loader\nprint(_loader._plugins)",
    )
    assert code == 0
    assert stdout.endswith("\nNone\n")  # never scanned


def _run_in_process(args: list[str]) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from dashtam_cli.cli.app import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def test_the_import_check_sees_heavy_libraries_when_they_load() -> None:
    """A command that does need pydantic shows it: the check above is not blind."""
    code, stdout, loaded = _run_entry(["paths", "--format", "json"])
    assert code == 0
    assert json.loads(stdout)
    assert "pydantic" in loaded
    assert "typer" in loaded


def test_lazy_short_help_matches_the_commands() -> None:
    """The root help's kept lines are each command's own first docstring line."""
    import typer

    from dashtam_cli.cli.lazy import COMMANDS, load

    for name, (_, _, kept) in COMMANDS.items():
        command = load(name)
        ctx = typer.Context(command, info_name=name)
        assert command.get_short_help_str(limit=200) == kept, name
        assert command.get_help(ctx)


def _console_script() -> str:
    beside = Path(sys.executable).parent / "dashtam"
    found = str(beside) if beside.exists() else shutil.which("dashtam")
    assert found, "the dashtam console script is not installed: run `uv sync`"
    return found


def test_installed_console_script_runs(isolated_env: Path) -> None:
    """The installed `dashtam` script answers --version and prints paths as JSON."""
    from dashtam_cli import __version__

    dashtam = _console_script()
    version = subprocess.run([dashtam, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout == f"dashtam {__version__}\n"
    paths = subprocess.run(
        [dashtam, "paths", "--format", "json"], capture_output=True, text=True, check=True
    )
    rows = {row["name"]: row["path"] for row in json.loads(paths.stdout)}
    assert rows["vault"] == str(isolated_env / "data" / "vault.sqlite3")
    assert {"config_dir", "config_file", "data_dir", "cache_dir", "log_dir"} <= set(rows)


# --- providers ----------------------------------------------------------------------------------

PROVIDERS = PACKAGE / "core" / "providers"
REGISTRY = PROVIDERS / "__init__.py"
# The built-in sandbox is Schwab's stand-in server (and `dashtam sandbox` its command): it
# names the provider it imitates, but it imports no provider package (it must not share
# the client's code, or a mapping bug would be mirrored on both sides and pass).
SANDBOX = (PACKAGE / "sandbox", PACKAGE / "cli" / "sandbox.py")
# Exact strings generic modules may hold: the sandbox command's help, which the lazy
# command group repeats so `dashtam --help` loads no command module.
NAMED_ALLOWED = {
    (
        "cli/lazy.py",
        "A built-in sandbox institution that speaks Schwab's API, SimpleFIN and Plaid, on 127.0.0.1.",
    ),
}


def _provider_packages() -> list[Path]:
    return sorted(p.parent for p in PROVIDERS.glob("*/__init__.py"))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string nodes that are docstrings (documentation, not code)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def provider_imports(tree: ast.AST, module: str, name: str) -> list[str]:
    """Every way ``tree`` (the module ``module``) imports the provider package ``name``."""
    target = f"dashtam_cli.core.providers.{name}"
    hits: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module
                parts = module.split(".")[: -node.level]
                base = ".".join([*parts, base] if base else parts)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]  # importlib.import_module("..."), __import__, lazy tables
        hits += [
            f"{getattr(node, 'lineno', 0)}: {n}"
            for n in names
            if n == target or n.startswith(f"{target}.")
        ]
    return hits


def names_provider(tree: ast.AST, name: str) -> list[str]:
    """Strings (not docstrings) and identifiers of ``tree`` holding the provider name ``name``."""
    docs = _docstrings(tree)
    hits: list[str] = []
    for node in ast.walk(tree):
        text: str | None = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text = node.name
        elif isinstance(node, ast.arg):
            text = node.arg
        elif isinstance(node, ast.alias):
            text = node.asname or node.name
        if text is not None and name in text.lower():
            hits.append(f"{getattr(node, 'lineno', 0)}: {text}")
    return hits


def _generic_modules() -> list[Path]:
    packages = _provider_packages()
    return [
        path
        for path in _modules(PACKAGE)
        if path != REGISTRY and not any(_inside(path, folder) for folder in (*packages, *SANDBOX))
    ]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_only_a_provider_and_the_registry_import_its_package() -> None:
    """No module outside ``core/providers/<name>/`` imports it, but the registry (and not the sandbox)."""
    packages = _provider_packages()
    assert [p.name for p in packages] == sorted(_builtin_names())
    offenders: list[str] = []
    for package in packages:
        for path in _modules(PACKAGE):
            if path == REGISTRY or _inside(path, package):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            offenders += [
                f"{path.relative_to(PACKAGE)}:{hit}"
                for hit in provider_imports(tree, _module_name(path), package.name)
            ]
    assert offenders == []


def _builtin_names() -> tuple[str, ...]:
    from dashtam_cli.core.providers import PROVIDER_NAMES

    return PROVIDER_NAMES


def test_generic_code_names_no_provider() -> None:
    """Generic modules hold no provider's name in code: hints, options and audit names ask the provider.

    Comments and docstrings may name one (documentation); the sandbox imitates
    Schwab and may; so may the exact strings of ``NAMED_ALLOWED``.
    """
    offenders: list[str] = []
    for path in _generic_modules():
        relative = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name in _builtin_names():
            offenders += [
                f"{relative}:{hit}"
                for hit in names_provider(tree, name)
                if (relative, hit.split(": ", 1)[1]) not in NAMED_ALLOWED
            ]
    assert offenders == []


def test_the_provider_detectors_catch_every_form() -> None:
    """Absolute, relative, string and from-package imports; names in strings and identifiers."""
    tree = ast.parse(
        textwrap.dedent(
            """
            '''A docstring may name Acme.'''
            import dashtam_cli.core.providers.acme.client
            from dashtam_cli.core.providers.acme import mapping
            from dashtam_cli.core.providers import acme
            from .acme import session
            import importlib
            importlib.import_module("dashtam_cli.core.providers.acme")
            hint = "dashtam connect acme"  # a comment may name acme
            def acme_types(acme_client): return ACME_TYPES
            """
        )
    )
    imports = provider_imports(tree, "dashtam_cli.core.providers.base", "acme")
    assert [hit.split(": ", 1)[0] for hit in imports] == ["3", "4", "4", "5", "6", "6", "8"]
    named = {hit.split(": ", 1)[1] for hit in names_provider(tree, "acme")}
    assert named == {
        "dashtam_cli.core.providers.acme",
        "dashtam_cli.core.providers.acme.client",
        "acme",
        "dashtam connect acme",
        "acme_types",
        "acme_client",
        "ACME_TYPES",
    }


def test_httpx_loads_without_its_command_line() -> None:
    """In a dashtam process httpx comes without httpx._main: no rich, pygments or click with it."""
    code, _, loaded = _run_entry(["paths", "--format", "json"], after="import httpx")
    assert code == 0
    assert "httpx" in loaded
    assert loaded & {"rich", "pygments", "click"} == set()
    # Outside the entry point, as a library, httpx brings them (installed by typer).
    done = subprocess.run(
        [sys.executable, "-c", "import httpx, sys; print('pygments' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "True"
