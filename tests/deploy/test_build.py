"""How the project is built and run: the Makefile installs what `make run` and `make test` use, and
pyproject.toml builds without setuptools' deprecation warnings."""

import os
import subprocess
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parents[2]


def _make(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["make", "-C", str(ROOT), *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_installs_dcmtk_and_make_test_adds_the_test_tools() -> None:
    """The README's first command after `make run` is storescu: `make run` installs dcmtk like `make test`."""
    run = _make("-n", "run")
    assert "/usr/bin/storescu:dcmtk" in run
    assert ":orthanc" not in run and ":prometheus" not in run  # what only the tests use
    test = _make("-n", "test")
    for package in ("dcmtk", "prometheus", "mricron-data", "orthanc"):
        assert f":{package}" in test


def test_missing_packages_are_installed_with_apt_get(tmp_path: Path) -> None:
    """A package whose file is missing goes to apt-get install (here a stand-in recording its arguments)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "apt-get.calls"
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake / "id").write_text("#!/bin/sh\necho 0\n")  # as root: no sudo
    for script in fake.iterdir():
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    _make("run-deps", f"RUN_APT=/usr/bin/storescu:dcmtk {tmp_path}/absent:some-package", env=env)
    assert calls.read_text().splitlines() == ["update -qq", "install -y -qq some-package"]


def test_pyproject_declares_its_licence_as_an_spdx_expression() -> None:
    """A `license` table makes setuptools warn that builds stop working after 2027-02-18 (warnings are errors here)."""
    dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "Apache-2.0"
