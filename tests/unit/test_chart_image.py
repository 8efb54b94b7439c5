"""What the image installs: `pip install .` (the Dockerfile's way, not an editable install) must
carry every package of the code, or a service dies at import in the container only."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_code_package_is_installed_by_pip_install_dot():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts)
               for top in ("services", "ui") for init in (ROOT / top).rglob("__init__.py")
               if "__pycache__" not in init.parts}
    assert on_disk <= listed, sorted(on_disk - listed)
    generated = {"cryptolens." + ".".join(init.parent.relative_to(ROOT / "gen" / "cryptolens").parts)
                 for init in (ROOT / "gen" / "cryptolens").rglob("__init__.py")}
    assert {p.rstrip(".") for p in generated} <= listed
