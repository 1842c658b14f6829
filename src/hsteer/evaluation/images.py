"""The one image-grid helper, and the figures of an evaluation report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def image_grid(images: Sequence[Any], columns: int = 8, scale: int = 2, *, tile: int | None = None,
               pad: int = 0):
    """Tile images into one PIL image, row by row, on white.

    `tile`: resize every image to tile x tile first (PIL's default filter); otherwise cells take the first
    image's size. `pad`: white pixels after each cell. `scale`: nearest-neighbour upscaling of the whole
    grid (the world's images are 32 px). `None` entries leave their cell blank. At most `columns` columns.
    """
    from PIL import Image

    if not images:
        raise ValueError("no images for the grid")
    cells = [None if img is None else img.convert("RGB") for img in images]
    if tile is not None:
        cells = [None if img is None else img.resize((tile, tile)) for img in cells]
    w, h = next(img for img in cells if img is not None).size
    cols = min(columns, len(cells))
    rows = -(-len(cells) // columns)
    grid = Image.new("RGB", (cols * (w + pad), rows * (h + pad)), "white")
    for n, img in enumerate(cells):
        if img is not None:
            grid.paste(img, ((n % columns) * (w + pad), (n // columns) * (h + pad)))
    if scale != 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return grid


def save_file_grid(folder: Path, files: Sequence[str], out: Path, columns: int = 8, tile: int = 128) -> None:
    """A grid of image files of `folder` (resized to `tile` px) saved to `out`; nothing for no files."""
    from PIL import Image

    images = []
    for f in files:
        with Image.open(folder / f) as img:
            images.append(img.convert("RGB"))
    if not images:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns, scale=1, tile=tile).save(out)


def distribution_plot(summary: dict, group: str, out: Path) -> None:
    """Stacked horizontal bars: one per profession, the share of each class of `group`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["per_profession"]
    professions = list(per)
    classes = list({**summary["attributes"], **summary.get("watch", {})}[group])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(professions) + 1.2))
    left = [0.0] * len(professions)
    for cls in classes:
        shares = [per[p][group]["distribution"][cls] for p in professions]
        ax.barh(professions, shares, left=left, label=cls)
        left = [a + b for a, b in zip(left, shares)]
    ax.axvline(1 / len(classes), color="black", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel(f"share of images ({group})")
    ax.set_title(f"{group}: mean deviation ratio {summary['mean_deviation_ratio'][group]:.3f}")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
