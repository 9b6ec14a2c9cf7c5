"""`make test` installs only what the suite runs: apt packages without their recommends, and of
Prometheus only the two binaries the tests start."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import ROOT


def test_system_deps_install_nothing_the_tests_do_not_run(tmp_path: Path) -> None:
    (tmp_path / ".created").touch()  # an existing virtual environment: only the recipe is printed
    done = subprocess.run(["make", "-n", "system-deps", f"VENV={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, check=True)  # fmt: skip
    installs = re.findall(r"apt-get install[^;]*", done.stdout)
    assert installs and all("--no-install-recommends" in command for command in installs), installs
    assert not any("prometheus" in command for command in installs)  # the package pulls in node-exporter & co
    assert "apt-get download -qq prometheus" in done.stdout and "dpkg-deb -x" in done.stdout
    assert f"root/usr/bin/promtool {tmp_path}/bin/" in done.stdout


def test_the_suite_finds_the_unpacked_binaries_first_on_path(tmp_path: Path) -> None:
    done = subprocess.run(["make", "-n", "test", f"VENV={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert f'PATH="{tmp_path}/bin:$PATH" {tmp_path}/bin/python -m pytest' in done.stdout
