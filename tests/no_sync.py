"""``forbid_host_sync()``: inside it, every Python-level way of reading a tensor's value back to the host
raises. On a GPU each of them waits for the device; a CPU test that passes under it has none."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

#: Tensor methods that read values back (``.to("cpu")`` of a CUDA tensor is the one left out: on a CPU it
#: cannot be told from a plain ``.to``).
SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")


class HostSync(AssertionError):
    """A tensor's value was read on the host."""


@contextlib.contextmanager
def forbid_host_sync() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in SYNCS:
            def refuse(self, *args, _name=name, **kwargs):
                raise HostSync(f"Tensor.{_name} (a device-to-host synchronisation on a GPU)")
            mp.setattr(torch.Tensor, name, refuse)
        yield
