"""The project's own packages are all shipped and all type-checked: the wheel once left out
`api`, so an installed `valueledger serve` could not start, and mypy never read it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests", "bench"}


def test_every_package_of_the_service_is_in_the_wheel_and_type_checked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    checked = set(project["tool"]["mypy"]["packages"])
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert shipped == packages - NOT_SHIPPED
    assert checked == packages
