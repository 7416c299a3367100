"""A spy for host reads of tensor values: on a GPU each one waits for the device (a sync)."""

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["HOST_READS", "HostReads"]

#: Tensor methods and functions that copy a value to the host (or whose output size depends on
#: the values, which the host must learn).
HOST_READS = {
    "__bool__", "__float__", "__int__", "__index__", "__complex__", "item", "tolist", "numpy", "cpu",
    "nonzero", "masked_select", "unique", "unique_consecutive", "bincount", "repeat_interleave",
    "allclose", "equal",
}  # fmt: skip


class HostReads(TorchFunctionMode):
    """Records the host reads made inside it (and boolean-mask indexing, ``x[mask]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        mask_index = name == "__getitem__" and any(
            torch.is_tensor(a) and a.dtype == torch.bool for a in _flat(args[1:])
        )
        result = func(*args, **(kwargs or {}))
        if name in HOST_READS or mask_index:
            self.reads.append(name)
        return result


def _flat(items):
    for item in items:
        if isinstance(item, (tuple, list)):
            yield from _flat(item)
        else:
            yield item
