"""The README's picture: the demo's contact sheets (astronaut + built-in motion, painting + test-split driver)
stacked and scaled down, written as a labelled PNG (synthetic marker + watermark, like every output).

    make demo && python scripts/readme_image.py outputs/demo docs/images/demo.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from talking_heads import media
from talking_heads.data.video import read_image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("demo_dir", help="the demo's output folder (talking-heads demo --out)")
    p.add_argument("out", help="PNG to write")
    p.add_argument("--width", type=int, default=960, help="width of the picture in px (default 960)")
    args = p.parse_args(argv)
    sheets = sorted(Path(args.demo_dir).glob("*.contact.png"))
    if not sheets:
        print(f"{args.demo_dir}: no *.contact.png (run `talking-heads demo --out {args.demo_dir}` first)",
              file=sys.stderr)
        return 2
    rows = [read_image(s) for s in sheets]
    rows = [media.resize(r, int(round(r.shape[0] * args.width / r.shape[1])), args.width) for r in rows]
    print(media.write_png(args.out, np.concatenate(rows, axis=0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
