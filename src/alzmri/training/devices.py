"""Where training runs: accelerator choice and the process layout under ``torchrun``.

``torchrun --nproc_per_node N -m alzmri train ...`` starts N processes with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE`` set; each process calls the same
``fit`` and Lightning's DDP strategy joins them (NCCL on GPUs, gloo on CPUs). Without those
variables training is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from alzmri.utils.errors import AlzmriError


def world_size() -> int:
    """Number of training processes (1 unless launched by ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def global_rank() -> int:
    """This process's rank among ``world_size()`` (0 when single-process)."""
    return int(os.environ.get("RANK", "0"))


def is_rank_zero() -> bool:
    """True in the process that writes the run folder."""
    return global_rank() == 0


def resolve_accelerator(device: str) -> str:
    """``"cuda"``, ``"mps"`` or ``"cpu"`` for a requested device (``"auto"`` tries them in that order).

    Raises:
        AlzmriError: the requested device is not available here.
    """
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device == "cuda" and not cuda:
        raise AlzmriError("--device cuda: no CUDA GPU is visible to PyTorch here; use --device auto or cpu")
    if device == "mps" and not mps:
        raise AlzmriError("--device mps: Apple's Metal backend is not available here; use --device auto or cpu")
    return device


@dataclass(frozen=True)
class Layout:
    """The Trainer arguments that place the run.

    Attributes:
        accelerator: ``"cuda"``, ``"mps"`` or ``"cpu"``.
        devices: processes (GPUs) on this node.
        num_nodes: nodes.
        strategy: ``"auto"`` or a DDP strategy object.
        plugins: cluster-environment plugins.
    """

    accelerator: str
    devices: int
    num_nodes: int
    strategy: Any
    plugins: list[Any]

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


def training_layout(device: str) -> Layout:
    """Single process, or DDP across the processes ``torchrun`` started.

    Under torchrun the environment is read explicitly (TorchElastic), so a torchrun inside a
    SLURM allocation is not mistaken for one process per SLURM task.
    """
    accelerator = resolve_accelerator(device)
    world = world_size()
    if world == 1:
        return Layout(accelerator, 1, 1, "auto", [])
    if accelerator == "mps":
        raise AlzmriError("multi-process training is not supported on Apple MPS; use --device cpu or a CUDA machine")
    from lightning.pytorch.plugins.environments import TorchElasticEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world % local:
        raise AlzmriError(f"WORLD_SIZE {world} is not a multiple of LOCAL_WORLD_SIZE {local}; launch with torchrun")
    if accelerator == "cuda" and local > torch.cuda.device_count():
        raise AlzmriError(f"{local} processes per node but {torch.cuda.device_count()} GPUs visible; lower --nproc_per_node")
    strategy = DDPStrategy(process_group_backend="nccl" if accelerator == "cuda" else "gloo")
    return Layout(accelerator, local, world // local, strategy, [TorchElasticEnvironment()])
