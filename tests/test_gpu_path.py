"""The CUDA path's parts that a CPU can check: the capturable optimizer's tensor learning rate through the
schedules and a resume, the CUDA-graph capture mode, the weight EMA's device-side counter, and the autocast
dtype on GPUs with and without bf16 (``torch.cuda`` replaced by fakes where a GPU would be needed)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
from no_sync import forbid_host_sync

from kneelib.train import checkpoint as ckpt
from kneelib.train import optim, runtime, steps
from kneelib.train.config import TrainConfig


def _model() -> torch.nn.Module:
    torch.manual_seed(0)  # smooth: a ReLU's dead units would amplify rounding into different trajectories
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)) for _ in range(n)]


def _train(model, optimizer, scheduler, per_step, batches, lrs) -> None:
    for i, (x, y) in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        if per_step:
            scheduler.step()
        elif i % 3 == 2:  # "epochs" of 3 steps
            scheduler.step()


@pytest.mark.parametrize("recipe", ["scratch", "paper"])
def test_a_capturable_optimizer_with_a_tensor_lr_follows_the_float_one_through_schedule_and_resume(
        recipe: str, tmp_path: Path) -> None:
    config = TrainConfig.from_recipe(recipe, arch="resnet18", weights=None, epochs=4, lr_step=1, lr_gamma=0.5)
    steps_per_epoch, batches = 3, _batches(12)
    trajectories = {}
    for capturable in (False, True):
        model = _model()
        optimizer = optim.make_optimizer(model, config, fused=True, capturable=capturable)
        assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor) == capturable
        scheduler, per_step = optim.make_scheduler(optimizer, config, steps_per_epoch)
        lrs: list[float] = []
        _train(model, optimizer, scheduler, per_step, batches[:6], lrs)
        # Resume as kneelib.train.loop does: everything through a checkpoint file, into fresh objects.
        path = tmp_path / f"last-{capturable}.pt"
        ckpt.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict()}, path)
        last = ckpt.load_checkpoint(path)
        model = _model()
        model.load_state_dict(last["model"])
        optimizer = optim.make_optimizer(model, config, fused=True, capturable=capturable)
        scheduler, per_step = optim.make_scheduler(optimizer, config, steps_per_epoch)
        optimizer.load_state_dict(last["optimizer"])
        optim.lr_to_device(optimizer, torch.device("cpu"))
        scheduler.load_state_dict(last["scheduler"])
        lr_object = optimizer.param_groups[0]["lr"]  # what a graph captured at the next batch would read
        _train(model, optimizer, scheduler, per_step, batches[6:], lrs)
        if capturable:  # the schedule changes that tensor in place, never replaces it
            assert optimizer.param_groups[0]["lr"] is lr_object
        trajectories[capturable] = (lrs, [p.detach().clone() for p in model.parameters()])
    (float_lrs, float_params), (tensor_lrs, tensor_params) = trajectories[False], trajectories[True]
    assert tensor_lrs == pytest.approx(float_lrs, rel=1e-6) and len(set(float_lrs)) > 3
    for a, b in zip(float_params, tensor_params):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


class _FakeCuda:
    """Enough of ``torch.cuda`` for :class:`kneelib.train.steps.GraphedStep` to run on CPU tensors: streams are
    no-ops, a "capture" runs the step once and a replay does nothing; ``graph_kwargs`` records the capture's
    keyword arguments."""

    def __init__(self) -> None:
        self.graph_kwargs: list[dict] = []
        self.replays = 0

    def install(self, mp: pytest.MonkeyPatch) -> None:
        fake = self

        class Stream:
            def __init__(self, *args, **kwargs) -> None: ...
            def wait_stream(self, other) -> None: ...

        class CUDAGraph:
            def replay(self) -> None:
                fake.replays += 1

        @contextlib.contextmanager
        def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
            fake.graph_kwargs.append({"pool": pool, "stream": stream, "capture_error_mode": capture_error_mode})
            yield

        mp.setattr(torch.cuda, "Stream", Stream)
        mp.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
        mp.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        mp.setattr(torch.cuda, "CUDAGraph", CUDAGraph)
        mp.setattr(torch.cuda, "graph", graph)
        mp.setattr(torch.cuda, "synchronize", lambda device=None: None)


def test_graph_capture_is_thread_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataLoader's pin-memory thread queries CUDA events while the first batch is captured (the capture is
    lazy, at the first batch): only a thread-local capture lets another thread do that."""
    fake = _FakeCuda()
    fake.install(monkeypatch)
    model = _model()
    optimizer = optim.make_optimizer(model, TrainConfig(arch="resnet18"), fused=True, capturable=True)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for opt in (optimizer, None):
        step = steps.GraphedStep(model, opt, torch.device("cpu"), batch_size=8, example=x, num_classes=3,
                                 precision="fp32")
        step(x, y)
    assert [k["capture_error_mode"] for k in fake.graph_kwargs] == ["thread_local", "thread_local"]
    assert fake.replays == 2


def _bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))


def test_the_weight_ema_keeps_its_counter_on_the_device_and_never_syncs() -> None:
    """On a GPU a counter on the host is copied to the device at every step, and reading it (``n == 0``)
    waits for the device: on the meta device any such read raises, and on a CPU the guard does."""
    model = _bn_model().to("meta")
    ema = optim.make_ema(model, 0.99)
    assert ema.n_averaged.device.type == "meta"
    ema.update_parameters(model)
    ema.update_parameters(model)
    model = _bn_model()
    ema = optim.make_ema(model, 0.99)
    with forbid_host_sync():
        for _ in range(3):
            ema.update_parameters(model)


def test_the_weight_ema_averages_as_before() -> None:
    """The first update copies the weights, the n-th (n >= 1) moves them by 1 - min(decay, (1 + n) / (10 + n))
    towards the model's; integer buffers are copied; the counter survives a state_dict round trip."""
    decay = 0.9
    model = _bn_model()
    ema = optim.make_ema(model, decay)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(2)
    for n in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        model.train()(torch.randn(16, 6, generator=g))  # BN statistics and num_batches_tracked move
        ema.update_parameters(model)
        d = min(decay, (1 + n) / (10 + n)) if n else 0.0
        for k, v in model.state_dict().items():
            expected[k] = expected[k] * d + v * (1 - d) if v.is_floating_point() else v.clone()
    state = ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(state[k], v, rtol=1e-5, atol=1e-6)
    assert int(ema.n_averaged) == 6
    again = optim.make_ema(_bn_model(), decay)
    again.load_state_dict(copy.deepcopy(ema.state_dict()))
    assert int(again.n_averaged) == 6


@pytest.mark.parametrize("has_bf16", [True, False])
def test_autocast_on_a_gpu_is_bf16_only_where_the_gpu_has_it(monkeypatch: pytest.MonkeyPatch, has_bf16: bool) -> None:
    """Pre-Ampere GPUs (compute capability < 8.0) emulate bf16: ``auto`` trains them in fp32 (fp16 would need a
    GradScaler, whose inf check and skipped steps do not fit a captured step)."""
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return has_bf16 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda")
    assert runtime.autocast_dtype("auto", cuda) is (torch.bfloat16 if has_bf16 else None)
    assert asked and not any(asked)  # emulated bf16 does not count
    assert runtime.autocast_dtype("fp32", cuda) is None
    assert runtime.autocast_dtype("bf16", cuda) is torch.bfloat16  # asked for explicitly: as asked
    step = steps.EagerStep(torch.nn.Linear(2, 2), None, cuda, precision="auto")
    assert step.dtype is (torch.bfloat16 if has_bf16 else None)


def test_a_runs_gpu_footprint_counts_the_allocators_reserve_and_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_memory_allocated`` leaves out the allocator's cached blocks and the CUDA context: the footprint a
    run records (config.json's gpu_memory, what RUN_GPU_GIB stands for) holds both."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * gib, 80 * gib))  # 10 GiB used
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 8 * gib)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 9 * gib)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 6 * gib)
    footprint = runtime.gpu_footprint(torch.device("cuda"))
    assert footprint["outside_allocator"] == 2.0 and footprint["per_run_estimate"] == 11.0
    assert footprint["max_allocated"] == 6.0 and footprint["total"] == 80.0
    assert runtime.gpu_footprint(torch.device("cpu")) is None
