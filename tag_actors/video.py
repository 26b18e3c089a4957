"""Evaluation videos: what each format needs is checked before any work starts, frames are written at the end.

    .mp4   imageio with its ffmpeg binary (imageio-ffmpeg)       pip install 'tag_actors[video]'
    .gif   Pillow only (no ffmpeg needed)                         pip install 'tag_actors[video]'

Rendering needs the env's own renderer, which comes with the env library: pyglet for VMAS (headless through EGL
without a display), pygame-ce (with mpe2) for mpe2 and Gymnasium's classic control. PettingZoo and Gymnasium envs
are built with ``render_mode='rgb_array'`` for it (``render_kwargs``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMATS: dict[str, tuple[str, ...]] = {".mp4": ("imageio", "imageio_ffmpeg"), ".gif": ("PIL",)}
PIP_NAMES = {"imageio": "imageio", "imageio_ffmpeg": "imageio-ffmpeg", "PIL": "pillow", "pygame": "pygame-ce",
             "pyglet": "pyglet"}
RENDERERS = {"vmas": ("pyglet",), "pettingzoo": ("pygame",), "gymnasium": ()}


class VideoError(RuntimeError):
    """A video that cannot be made here; one line that says what to install."""


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def check_video(path: Path, env_kind: str) -> None:
    """Raise VideoError now, before an evaluation runs, if ``path``'s format or ``env_kind``'s renderer lacks a
    package."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise VideoError(f"--video {path}: unknown format {suffix or '(none)'!r}; use .mp4 or .gif")
    writers, renderers = _missing(FORMATS[suffix]), _missing(RENDERERS.get(env_kind, ()))
    if writers:
        names = " and ".join(PIP_NAMES.get(m, m) for m in writers)
        hint = " (or write a .gif, which needs only Pillow)" if suffix == ".mp4" and "PIL" not in writers else ""
        raise VideoError(f"--video {path} needs {names}: pip install 'tag_actors[video]'{hint}")
    if renderers:
        names = " ".join(PIP_NAMES.get(m, m) for m in renderers)
        raise VideoError(f"--video {path}: rendering a {env_kind} env needs {names}: pip install {names}")


def render_kwargs(env_kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The env kwargs with what rendering needs: PettingZoo and Gymnasium envs draw only when built with
    ``render_mode='rgb_array'``; VMAS renders on request."""
    if env_kind in ("pettingzoo", "gymnasium") and "render_mode" not in kwargs:
        return {**kwargs, "render_mode": "rgb_array"}
    return dict(kwargs)


def prepare_rendering(env_kind: str) -> None:
    """VMAS draws with pyglet, which needs a display: without one, render offscreen through EGL."""
    if env_kind == "vmas" and not os.environ.get("DISPLAY") and importlib.util.find_spec("pyglet") is not None:
        import pyglet

        pyglet.options["headless"] = True


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 wants even sides: pad one edge row/column if needed (no resampling)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(frames: list[np.ndarray], path: Path, fps: int = 20) -> Path:
    """Write RGB frames to ``path`` (.mp4 or .gif, see FORMATS)."""
    if not frames:
        raise VideoError(f"--video {path}: no frames were rendered")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = [np.ascontiguousarray(np.asarray(f)[..., :3].astype(np.uint8)) for f in frames]
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in rgb]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p") as w:
        for f in rgb:
            w.append_data(_even(f))
    return path
