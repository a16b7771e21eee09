"""Code in the README and the notebook in docs/ runs as written; documented commands name
real options and the shipped model."""

import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_readme_python_block_runs(code, monkeypatch):
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """docs/notebook.py (jupytext percent format) as a script, from the repository root."""
    import runpy

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SPECSR_OUT", str(tmp_path))
    namespace = runpy.run_path(str(REPO / "docs" / "notebook.py"), run_name="__main__")
    table = namespace["table"]
    assert len(table) == 4 and str(table["n2_p50"].unit) == "dex"
    assert (tmp_path / "super_resolved.png").stat().st_size > 10_000
    errors = np.abs(np.asarray(table["n2_p50"] - table["true_n2"]))
    assert np.median(errors) < 0.3  # bright galaxies (S/N >= 10): NMAD ~0.15 dex on the held-out sets
    assert len(namespace["without_mass"]) == 4
    # the window is placed at the grism z prior: within a few 1e-3 (1+z) of the truth
    z_true = namespace["galaxies"]["z"]
    assert np.all(np.abs(np.asarray(table["sr_z_place"]) - z_true) < 0.01 * (1 + z_true))


DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, argv) of every `specsr ...` line in the shell blocks of README.md and docs/."""
    import shlex

    found = []
    for path in DOC_FILES:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", path.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                if not re.match(r"\s*(\w+=\S*\s+)*specsr\s", line + " "):
                    continue
                words = shlex.split(line.split(" #")[0])
                while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words[:1] == ["specsr"]:
                    found.append((path.name, words[1:]))
    return found


def test_docs_show_commands_at_all():
    assert len(documented_commands()) >= 25  # the parser still finds the tours


@pytest.mark.parametrize("where,argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_documented_commands_use_options_that_exist(where, argv):
    """Every documented `specsr COMMAND --option` names a command and options the CLI has."""
    import typer.main

    from cli.main import app

    group = typer.main.get_command(app)
    if not argv or argv[0].startswith("-"):
        assert set(argv) <= {"--help", "--version"}, (where, argv)
        return
    command = group.commands.get(argv[0])
    assert command is not None, f"{where}: no command `specsr {argv[0]}`"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
    used = {word.split("=")[0] for word in argv[1:] if word.startswith("--")}
    assert used <= known, f"{where}: `specsr {argv[0]}` has no {sorted(used - known)}"


def test_docs_name_the_shipped_model_version():
    version = re.search(r"^SHIPPED_VERSION := (\d+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert (REPO / "saved_models" / "specsr" / version / "saved_model.pb").is_file()
    for path in [*DOC_FILES, REPO / "docs" / "notebook.py"]:
        named = set(re.findall(r"saved_models/specsr/(\d+)", path.read_text()))
        assert named <= {version}, f"{path.name} names specsr/{sorted(named - {version})}, shipped {version}"
