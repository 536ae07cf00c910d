"""matplotlib for the figure tools: figures without pyplot's global state, saved byte-identical.

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas (no display, no backend
switch, nothing global kept between figures). PNGs are written from that canvas's pixels (the
same pixels TensorBoard gets). Saving drops what would differ between two runs
on the same inputs (a PDF's or SVG's creation date, SVG's random element ids) and goes through
``utils.atomic``, so a figure on disk is always a whole file.
"""
import os
from typing import List, Sequence, Tuple

from utils.atomic import atomic_write
from utils.errors import UserError

DPI = 100
NO_DATES = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}}


def new_figure(size_inches: Tuple[float, float]):
    """An empty figure with constrained layout (labels and colour bars never overlap)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise UserError("the figures need matplotlib: pip install matplotlib "
                        "(requirements.txt lists it)") from err
    return Figure(figsize=size_inches, dpi=DPI, layout="constrained")


def save_figure(figure, stem: str, formats: Sequence[str], pixels=None) -> List[str]:
    """``stem.<format>`` for each format, written atomically; returns the paths. The PNG is
    ``pixels`` (``rgb_image(figure)``, rendered here when not given), so a caller that also
    needs the image (TensorBoard) renders the figure once."""
    from matplotlib import rc_context
    from matplotlib.image import imsave
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        if fmt == "png":
            image = rgb_image(figure) if pixels is None else pixels
            atomic_write(path, lambda f: imsave(f, image, format="png", dpi=DPI))
        else:
            with rc_context({"svg.hashsalt": "distillery"}):
                atomic_write(path, lambda f, fmt=fmt: figure.savefig(f, format=fmt, metadata=NO_DATES[fmt]))
        paths.append(path)
    return paths


def rgb_image(figure):
    """The figure rendered as an ``[H, W, 3]`` uint8 array (for TensorBoard's IMAGES tab)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def check_output_dir(path: str) -> str:
    """``path`` as a directory figures may be written into (created when absent)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--out {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output directory {path}: {err.strerror}") from err
    return path
