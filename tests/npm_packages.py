"""npm packages that tests read (official R4 examples, the R4 JSON schema), fetched once.

`npm pack NAME@VERSION` downloads the tarball into a cache directory ($RIX_TEST_CACHE, else
~/.cache/rix-test/), which is unpacked once and reused by later runs. Without npm, or when the
registry cannot be reached, the test fails in CI (CI set) and is skipped elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest


def cache_dir() -> Path:
    """Where downloaded packages are kept between test runs."""
    configured = os.environ.get("RIX_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "rix-test"


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (required in CI)", pytrace=False)
    pytest.skip(message)


def npm_package(spec: str) -> Path:
    """The unpacked `package/` directory of the npm package `spec` (`name@version`)."""
    target = cache_dir() / re.sub(r"[^A-Za-z0-9.]+", "-", spec).strip("-")
    if (target / "package").is_dir():
        return target / "package"
    npm = shutil.which("npm")
    if npm is None:
        _unavailable(f"npm is not installed: cannot fetch {spec} (apt-get install npm)")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".npm-", dir=target.parent))
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--silent"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tarballs = list(work.glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            _unavailable(f"npm pack {spec} failed ({done.returncode}): {done.stderr.strip()}")
        unpacked = work / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, filter="data")
        try:
            unpacked.rename(target)  # atomic: a half-unpacked package is never seen
        except OSError:
            if not (target / "package").is_dir():  # not a concurrent run that got there first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "package"
