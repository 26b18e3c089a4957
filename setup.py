"""Packaging beyond what pyproject.toml can say: the repository's top-level ``configs/`` (the source of truth)
ships inside the wheel as ``tag_actors/configs/*.toml``, so an installed ``tag-actors balance`` finds its configs
outside the checkout. An editable install needs nothing: tag_actors.config_files falls back to the checkout."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["tag_actors", "tag_actors.*"]), "tag_actors.configs"],
    package_dir={"tag_actors.configs": "configs"},
    package_data={"tag_actors.configs": ["*.toml"]},
)
