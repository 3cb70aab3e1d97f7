"""requirements/*.lock: every package pinned with its hashes, still what pyproject.toml asks for, and used.

cpu-dev.lock is what `make setup`/`make test` (so CI) install for `.[cpu,dev]`; tools.lock is what
docker/Dockerfile.tools installs. `bash requirements/compile.sh` regenerates both.
"""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
LOCKS = {  # lock -> the requirements it must satisfy, and whether torch is in it
    "cpu-dev.lock": (PROJECT["dependencies"] + EXTRAS["cpu"] + EXTRAS["dev"], True),
    "tools.lock": (PROJECT["dependencies"], False),
}


def _pins(lock: str) -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, hashes), from `name==version \\` lines followed by `--hash=sha256:...` lines."""
    pins, current = {}, None
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = canonicalize_name(m[1])
            assert current not in pins, f"{current} pinned twice"
            pins[current] = (Version(m[2]), [])
        elif m := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            pins[current][1].append(m[1])
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"unexpected line in {lock}: {line!r}")
    return pins


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_package_is_pinned_with_hashes(lock):
    pins = _pins(lock)
    assert len(pins) > 100
    assert not [name for name, (_, hashes) in pins.items() if not hashes], "packages without a hash"
    assert "setuptools" in pins, "the build backend is locked too (installs use --no-build-isolation)"
    assert not any(name.startswith("nvidia-") for name in pins), "a CPU lock must not pull CUDA libraries"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_satisfies_pyproject(lock):
    wanted, has_torch = LOCKS[lock]
    pins = _pins(lock)
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is missing from {lock}: run `bash requirements/compile.sh`"
        # `torch==2.13.0` is satisfied by the local CPU build 2.13.0+cpu (PEP 440 ignores the local label).
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{lock} pins {name}=={pins[name][0]}, pyproject wants {req}"
    assert ("torch" in pins) == has_torch
    if has_torch:
        assert pins["torch"][0].local == "cpu"


def test_ci_setup_and_the_tools_image_install_from_the_locks():
    stack = (ROOT / "deployments" / "local_stack.sh").read_text()
    assert '--require-hashes --no-deps -r "$LOCK"' in stack and 'LOCK="requirements/cpu-dev.lock"' in stack
    tools = (ROOT / "docker" / "Dockerfile.tools").read_text()
    assert "COPY requirements/tools.lock" in tools and "--require-hashes --no-deps -r /tmp/tools.lock" in tools
    torch_version = re.search(r"ARG TORCH_VERSION=(\S+)", tools)[1]
    assert Version(torch_version) == Version(str(_pins("cpu-dev.lock")["torch"][0]).split("+")[0])
