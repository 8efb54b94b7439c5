"""The image: what `pip install .` (the Dockerfile's way, not an editable install) carries, and the
image really built and run (scripts/image-smoke.sh)."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.conftest import ROOT, require_tool


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


def test_the_image_builds_and_runs_the_stack():
    """scripts/image-smoke.sh, bounded: the Dockerfile built with podman (base from debootstrap),
    Fetch, Core, Alerts and the dashboard run from it on loopback against a password-protected
    Redis whose URL they read from a mounted file; health, GetStats and the dashboard answer."""
    for tool in ("podman", "runc", "debootstrap", "redis-server", "curl"):
        require_tool(tool)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "image-smoke.sh")], cwd=ROOT, capture_output=True,
                            text=True, timeout=900, check=False)
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-4000:]
    assert len(re.findall(r"^127\.0\.0\.1:\d+: SERVING$", out, re.M)) == 3, out
    count = int(re.search(r"^GetStats BTC-USD: (\d+) prices", out, re.M).group(1))
    assert count > 0 and "dashboard: ok" in out
    size = int(re.search(r"is (\d+) MB", out).group(1))
    assert 0 < size < 2000, size  # the whole project, Streamlit included
    print(out.splitlines()[-1])
