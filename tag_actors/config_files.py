"""Finding a config by name: ``python -m tag_actors.launch balance`` works in the checkout and from an installed
wheel anywhere. The repository's ``configs/`` is the source of truth; the wheel ships it as the package data
``tag_actors.configs`` (setup.py maps that package onto ``configs/``)."""

from __future__ import annotations

from pathlib import Path

from tag_actors.config import ConfigError


def config_dirs() -> list[Path]:
    """Where bare config names are looked up, in order: ./configs, the installed wheel's package data
    (site-packages/tag_actors/configs), the checkout's configs/ (an editable or PYTHONPATH install)."""
    package = Path(__file__).resolve().parent
    return [Path("configs"), package / "configs", package.parent / "configs"]


def find_config(arg: str | Path) -> Path:
    """``arg`` itself when it is a file; otherwise, for a bare name (``balance`` or ``balance.toml``), the first
    ``<name>.toml`` in ``config_dirs()``. A name found nowhere is a ConfigError listing the known names."""
    path = Path(arg)
    if path.exists() or len(path.parts) != 1:
        return path
    file = path.name if path.suffix == ".toml" else f"{path.name}.toml"
    for d in config_dirs():
        if (d / file).is_file():
            return d / file
    known = sorted({p.stem for d in config_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(f"{arg}: no such config file, and no packaged config of that name (known: "
                      f"{', '.join(known) or 'none'})")
