"""Keep the wheels the GPU image lacks: `python3 bench/gpu_wheels.py ALL_DIR DEST IMAGE_LIST`.

Moves each wheel of ALL_DIR whose distribution is not in IMAGE_LIST (one name a line, `#` comments)
into DEST. rouge-score is always kept: the image's copy is too old to take a tokenizer.
"""

import re
import shutil
import sys
from pathlib import Path

ALWAYS = {"rouge-score"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(all_dir: str, dest: str, image_list: str) -> None:
    have = {norm(line.strip()) for line in Path(image_list).read_text().splitlines() if line.strip() and not line.startswith("#")}
    kept = 0
    for wheel in sorted(Path(all_dir).glob("*.whl")):
        name = norm(wheel.name.split("-")[0])
        if name not in have or name in ALWAYS:
            shutil.move(str(wheel), Path(dest) / wheel.name)
            kept += 1
    print(f"{kept} wheels the GPU image lacks -> {dest}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
