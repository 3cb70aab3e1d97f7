"""Where the project's own files are: the repository root and the folders the design card names.

`TITLEGEN_HOME` overrides the root (a container that copies the tree elsewhere, say).
"""

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout that holds `prompt_templates/`, `serving/` and `prefect.yaml`."""
    env = os.environ.get("TITLEGEN_HOME")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def prompt_templates_dir() -> Path:
    return project_root() / "prompt_templates"


def serving_dir() -> Path:
    return project_root() / "serving"
