"""A training step reads nothing back to the host, so on a GPU it never waits for the device.

On a GPU every read of a tensor's value by Python (``.item()``, ``if tensor:``, ``float(t)``,
``.tolist()``, ``.cpu()``, a boolean mask's ``nonzero``) blocks until the device has finished all
the work queued before it; one such read in a step stalls every step. The reads are the same Python
calls on a CPU, so this test catches them here: it runs the loss and backward pass of the step
``vaeflows train`` takes under a ``TorchFunctionMode`` that records them. (The optimizer step is
torch's; its ``.item()`` reads of the step count are of a CPU tensor, also for parameters on a GPU.)
"""

import functools

import pyro
import pytest
import torch

from tests.host_reads import HostReads
from vaeflows.data import load_dataset
from vaeflows.infer.experiment import vae_loss
from vaeflows.models import build_vae
from vaeflows.transforms import POSTERIOR_FLOWS, sylvester_flows

#: Flows whose log-determinant needs the host by design: FFJORD's adaptive ODE solver (dopri5)
#: chooses its steps from error estimates on the host.
ADAPTIVE = {"ffjord"}
#: Host reads that wait for no device: the residual flow's Russian roulette draws its number of
#: terms from the CPU generator (``float(torch.rand(()))``), one draw per flow step.
CPU_DRAWS = {"residual": ["__float__"] * 2}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("flow", ["none", *POSTERIOR_FLOWS])
def test_a_training_step_reads_nothing_back_to_the_host(flow, digits, monkeypatch):
    # O-SNF's orthogonalization asks the host whether it has converged: on the CPU (where that
    # costs nothing) every iteration, on a GPU every 8: here the GPU's way.
    gpu_orthogonalize = functools.partial(sylvester_flows.orthogonalize, check_every=8)
    monkeypatch.setattr(sylvester_flows, "orthogonalize", gpu_orthogonalize)
    torch.manual_seed(0)
    vae = build_vae(
        image_shape=digits.image_shape,
        likelihood=digits.likelihood,
        arch="mlp",
        latent_dim=4,
        flow=None if flow == "none" else flow,
        num_flows=2,
        hidden_dims=(16,),
    )
    vae.register_params = False
    loss = vae_loss(vae, digits, warmup=2)
    optimizer = torch.optim.Adamax(vae.parameters(), lr=1e-3)
    batch = digits.train[:8]
    with pyro.validation_enabled(False):
        loss(batch, 1).backward()  # first calls may read once (the residual flow's "initialized")
        for epoch in (1, 3):  # during warm-up (poutine.scale) and after it
            spy = HostReads()
            with spy:
                value = loss(batch, epoch)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
            optimizer.step()  # torch's; it reads its step count from a CPU tensor, no device sync
            if flow in ADAPTIVE:
                assert spy.reads, "the adaptive solver's host reads were not seen: is the spy blind?"
            elif flow == "sylvester-orthogonal":
                # one read per 8 iterations; this small model's Q needs 9 to 24 in float32
                assert 1 <= len(spy.reads) <= 3 and set(spy.reads) == {"__bool__"}, spy.reads
            else:
                assert spy.reads == CPU_DRAWS.get(flow, []), f"{flow}: host reads in a step: {spy.reads}"


def test_the_spy_sees_host_reads():
    spy = HostReads()
    x = torch.randn(5)
    with spy:
        if x.sum() > 0:
            pass
        x.max().item()
        x[x > 0]
    assert spy.reads == ["__bool__", "item", "__getitem__"]
