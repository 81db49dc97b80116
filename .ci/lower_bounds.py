"""Print a pip constraints file that pins every runtime dependency of pyproject.toml to its lower bound.

`.ci/lowest` installs the package with it, so the tests run against the oldest versions the project
claims to support; the dependencies of those dependencies resolve as usual (the newest that fit). A
runtime dependency without a `>=` bound fails here: a range that has no bottom cannot be tested.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def lower_bounds(requirements: list[str]) -> list[str]:
    pins: list[str] = []
    for requirement in requirements:
        match = REQUIREMENT.match(requirement.split(";")[0])
        if match is None:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        name, specifiers = match[1], match[2]
        bottom = re.search(r">=\s*([0-9][^,\s]*)", specifiers)
        if bottom is None:
            raise SystemExit(f"{requirement!r} has no lower bound (>=): its lowest version cannot be tested")
        pins.append(f"{name}=={bottom[1]}")
    return pins


def main() -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    sys.stdout.write("".join(f"{pin}\n" for pin in lower_bounds(project["dependencies"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
