"""The coverage gate reads its thresholds from pyproject.toml and fails a figure below one."""

from __future__ import annotations

from coverage_gate import ROOT, check, thresholds


def test_every_gated_module_exists() -> None:
    """A renamed module cannot drop out of the gate silently, and the gate is not empty."""
    total, modules = thresholds(ROOT / "pyproject.toml")
    assert total >= 90
    assert "dashtam_cli/core/vault/keys.py" in modules
    for module, bar in modules.items():
        assert (ROOT / module).is_file(), module
        assert 0 < bar <= 100, module


def test_a_figure_below_its_bar_fails_and_one_at_it_passes() -> None:
    """97.99 misses 98 (no rounding up); 98 meets it; a module never measured fails."""
    lines = check(
        91.0,
        {"a.py": 97.99, "b.py": 98.0},
        90.0,
        {"a.py": 98.0, "b.py": 98.0, "gone.py": 98.0},
    )
    verdicts = {line.split()[1].rstrip(":"): line.split()[0] for line in lines}
    assert verdicts == {"overall": "ok", "a.py": "FAIL", "b.py": "ok", "gone.py": "FAIL"}
    assert "97.99%" in lines[1]


def test_the_overall_figure_is_checked_too() -> None:
    """Every module at 100% does not hide an overall figure under its bar."""
    (line,) = check(89.9, {}, 90.0, {})
    assert line.startswith("FAIL overall")
