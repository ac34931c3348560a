"""Render one example of every class in every style of the demo benchmark as one image (the README's picture).

    python experiments/render_demo_styles.py --out docs/demo_styles.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wiseft_lab.data import synthetic  # noqa: E402


def style_grid(size: int = 64, scale: int = 2, seed: int = 0, label_width: int = 70) -> Image.Image:
    """Rows: styles (reference first); columns: classes; sample ``i`` of the ``test`` split of each style."""
    cell = size * scale
    grid = Image.new("RGB", (label_width + cell * len(synthetic.CLASSNAMES), cell * len(synthetic.STYLES)), "white")
    draw = ImageDraw.Draw(grid)
    for row, style in enumerate(synthetic.STYLES):
        draw.text((4, row * cell + cell // 2 - 6), style, fill="black")
        for col in range(len(synthetic.CLASSNAMES)):
            image = synthetic.render(col, style, synthetic.sample_rng(seed, style, "test", col), size)
            grid.paste(image.resize((cell, cell), Image.NEAREST), (label_width + col * cell, row * cell))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "demo_styles.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    style_grid(seed=args.seed).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
