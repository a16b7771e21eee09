"""Code in the README runs as written."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_readme_python_block_runs(code, monkeypatch):
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
