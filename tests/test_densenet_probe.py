"""benchmarks/densenet_probe.py's --patch: the replaced optimizer and schedule do what the probe records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from kneelib.models.registry import build_model
from kneelib.train import TrainConfig, optim, steps

PROBE = Path(__file__).resolve().parents[1] / "benchmarks" / "densenet_probe.py"


@pytest.fixture()
def probe(monkeypatch: pytest.MonkeyPatch):
    """The probe module, with the recipe functions it replaces restored after the test."""
    monkeypatch.setattr(optim, "make_optimizer", optim.make_optimizer)
    monkeypatch.setattr(optim, "make_scheduler", optim.make_scheduler)
    monkeypatch.setattr(steps.EagerStep, "__call__", steps.EagerStep.__call__)
    spec = importlib.util.spec_from_file_location("kneelib_densenet_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_patch_scales_the_head_and_keeps_the_peak(probe) -> None:
    config = TrainConfig.from_recipe("scratch", arch="resnet18", scheme="kl5", epochs=2, device="cpu")
    probe.apply_patch({"head_lr_mult": 10, "betas": [0.9, 0.99], "constant_lr": True})
    model = build_model("resnet18", num_classes=5)
    optimizer = optim.make_optimizer(model, config, fused=False)
    body, head = optimizer.param_groups
    assert head["lr"] == pytest.approx(10 * config.lr) and body["lr"] == pytest.approx(config.lr)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    assert len(body["params"]) + len(head["params"]) == len(list(model.parameters()))
    assert body["betas"] == (0.9, 0.99) and isinstance(optimizer, torch.optim.AdamW)
    scheduler, per_step = optim.make_scheduler(optimizer, config, steps_per_epoch=4)
    factors = []
    for _ in range(8):
        factors.append(optimizer.param_groups[0]["lr"] / config.lr)
        optimizer.step()
        scheduler.step()
    assert per_step and factors == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1])


def test_unknown_patch_key_stops(probe) -> None:
    with pytest.raises(SystemExit, match="unknown --patch keys"):
        probe.apply_patch({"head_lr": 10})


def test_trace_writes_a_line_per_training_step(probe, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    probe.trace_steps(trace)
    model = build_model("resnet18", num_classes=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, targets = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    for _ in range(2):
        steps.EagerStep(model, optimizer, torch.device("cpu"), precision="fp32")(images, targets)
    steps.EagerStep(model, None, torch.device("cpu"), precision="fp32")(images, targets)  # evaluation: no line
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(rows) == 2 and all(sum(r["predicted"]) == 4 and len(r["mean_logit"]) == 5 for r in rows)
    assert all(r["spread"] > 0 and r["loss"] > 0 for r in rows)


def test_lamb_moves_each_weight_tensor_by_its_trust_fraction(probe) -> None:
    torch.manual_seed(0)
    weight, bias = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.zeros(8))
    optimizer = probe.Lamb([{"params": [weight], "lr": 0.01, "trust": True}, {"params": [bias], "lr": 1e-3}])
    before_w, before_b = weight.detach().clone(), bias.detach().clone()
    (weight.sum() * 100 + (bias * torch.arange(8.0)).sum()).backward()
    optimizer.step()
    assert float((weight.detach() - before_w).norm() / before_w.norm()) == pytest.approx(0.01, rel=1e-4)
    # without trust: Adam's first step moves every element by the rate (here the one with zero gradient stays)
    assert (bias.detach() - before_b).abs().tolist() == pytest.approx([0.0] + [1e-3] * 7, rel=1e-3)
