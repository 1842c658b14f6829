"""The one image-grid helper (bare, or labelled with row names and seeds), and the figures of an evaluation
report."""

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


#: Space around a label, in pixels; labels are black on the grid's white.
LABEL_MARGIN = 4


def _text_size(draw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _draw_text(draw, xy: tuple[int, int], text: str, font) -> None:
    """`text` with its ink's top-left corner at `xy` (the bitmap default font takes no anchors)."""
    left, top, _, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((xy[0] - left, xy[1] - top), text, fill="black", font=font)


def labelled_grid(rows: Sequence[Sequence[Any]], row_names: Sequence[str], seeds: Sequence[Sequence[Any]], *,
                  scale: int = 1, tile: int | None = None, pad: int = 0):
    """`image_grid` of `rows` (one list of images per row, `None` for a blank cell) with each row's name in a
    band on the left and each column's seed above it, so a grid read on its own says what each image is.

    `seeds[r][c]` is the seed of `rows[r][c]` (`None`: no label). A band of seeds is drawn above the first
    row and above every row whose seeds differ from the row before: rows that share seeds (plain, fair and
    safe images of the same seeds) get one band at the top, rows of images with seeds of their own one each.
    Labels are drawn after `scale`, in PIL's default font, so they stay sharp.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not (len(rows) == len(row_names) == len(seeds)):
        raise ValueError("one row name and one list of seeds per row")
    columns = max((len(r) for r in rows), default=0)
    bare = image_grid([cell for r in rows for cell in [*r, *[None] * (columns - len(r))]], columns, scale,
                      tile=tile, pad=pad)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(bare)
    line = _text_size(measure, "0123456789gA", font)[1]
    left = max(_text_size(measure, str(n), font)[0] for n in row_names) + 2 * LABEL_MARGIN
    band = line + 2 * LABEL_MARGIN
    bands = [r == 0 or list(seeds[r]) != list(seeds[r - 1]) for r in range(len(rows))]
    row_h, col_w, pad_px = bare.height // len(rows), bare.width // columns, pad * scale
    grid = Image.new("RGB", (left + bare.width, bare.height + band * sum(bands)), "white")
    draw = ImageDraw.Draw(grid)
    y = 0
    for r, name in enumerate(row_names):
        if bands[r]:
            for c, seed in enumerate(seeds[r]):
                if seed is not None:
                    text = f"seed {seed}"
                    width = _text_size(draw, text, font)[0]
                    x = left + c * col_w + max(0, (col_w - pad_px - width) // 2)  # never into the names
                    _draw_text(draw, (x, y + LABEL_MARGIN), text, font)
            y += band
        grid.paste(bare.crop((0, r * row_h, bare.width, (r + 1) * row_h)), (left, y))
        height = _text_size(draw, str(name), font)[1]
        _draw_text(draw, (LABEL_MARGIN, y + (row_h - pad_px - height) // 2), str(name), font)
        y += row_h
    return grid


def save_run_grid(run_dir: Path, files: Sequence[str], out: Path, columns: int = 8, tile: int = 128) -> None:
    """A labelled grid of a run folder's images `files` (resized to `tile` px) saved to `out`; nothing for
    no files. Each row is named by its images' policy and each image carries its seed, read from the run's
    manifest, so the grid says which policy and seeds made it."""

    from hsteer.evaluation.runs import IMAGES, load_records

    from hsteer.fileio import read_image

    images = [read_image(run_dir / IMAGES / f, "run image", no_links=True) for f in files]
    if not images:
        return
    records = load_records(run_dir)
    chunks = [list(files[i:i + columns]) for i in range(0, len(files), columns)]
    names = [records.get(chunk[0], {}).get("policy", "") for chunk in chunks]
    seeds = [[records.get(f, {}).get("seed") for f in chunk] for chunk in chunks]
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, names, seeds, tile=tile).save(out)


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
