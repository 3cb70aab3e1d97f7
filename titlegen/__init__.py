"""titlegen: fine-tune Gemma 3n to write Traditional Chinese news headlines, orchestrated by Prefect.

The stages live in `titlegen.tasks` (top-level folder `tasks/`), the flow in `titlegen.flows`
(folder `flows/`), shared pieces here: parameters (`params`), the one prompt (`prompt`), run
folders and atomic writes (`runs`).
"""

__version__ = "0.1.0"
