"""Device selection (``env.device``, ``levels[].device``): CPU by default; 'auto' takes CUDA where torch sees it.

The spec is checked when the config is read (any host can do that); it is resolved in the process that uses it,
because only that process's host knows whether it has a GPU (a multi-host run may have one on one host only).
"""

from __future__ import annotations

import re

_SPEC = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


class DeviceError(RuntimeError):
    """A device asked for that this host does not have; names the key."""


def check_device_spec(spec: str, where: str, error: type[Exception] = ValueError) -> None:
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise error(f"{where}: expected 'cpu', 'auto', 'cuda' or 'cuda:N', got {spec!r}")


def resolve_device(spec: str, where: str = "device") -> str:
    """'cpu' | 'cuda' | 'cuda:N' for ``spec``. 'auto' is 'cuda' when torch sees a CUDA device, else 'cpu'. Asking
    for CUDA where there is none (or for an index beyond the devices present) is an error naming ``where``."""
    check_device_spec(spec, where)
    if spec == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if spec == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise DeviceError(f"{where} = {spec!r}, but torch {torch.__version__} sees no CUDA device on this host "
                           "(use 'auto' to fall back to the CPU)")
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"{where} = {spec!r}, but this host has {count} CUDA device(s)")
    return spec
