"""Figures shared by the notebooks. Every figure is saved through :func:`save_figure`."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

from .results import atomic_write_bytes, output_dir

# Fixed metadata so that a rerun on the same software writes the same bytes (no date, no version).
_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


def save_figure(fig: "matplotlib.figure.Figure", name: str, formats: tuple[str, ...] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<figures>/<name>.<fmt>`` for each format, atomically; return the paths."""
    if not name or Path(name).name != name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_METADATA.get(fmt))
        paths.append(atomic_write_bytes(output_dir("figures") / f"{name}.{fmt}", buffer.getvalue()))
    return paths
