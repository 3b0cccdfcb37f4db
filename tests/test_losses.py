"""The losses a run may minimise (kneelib.train.losses) and CORN's ordinal head (kneelib.models.ordinal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fakes import make_tiny_dataset
from torch import nn

from kneelib.cli import main
from kneelib.errors import KneelibError
from kneelib.evaluate.inference import load_run
from kneelib.evaluate.split_evaluation import evaluate_runs
from kneelib.models.ordinal import CornHead
from kneelib.models.registry import build_model
from kneelib.train import Runtime, train
from kneelib.train.config import TrainConfig
from kneelib.train.losses import class_frequency_weights, corn_loss, make_criterion
from kneelib.train.steps import EagerStep

TINY = dict(arch="resnet18", epochs=2, image_size=64, batch_size=4, seed=7)


def reference_corn_loss(conditional: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CORN's loss as its authors write it (coral-pytorch's ``corn_loss``): a binary cross-entropy per task
    ``grade > k`` over the images of grade above k−1, summed and divided by the number of (image, task) pairs."""
    total, pairs = conditional.new_zeros(()), 0
    for k in range(conditional.shape[1]):
        rows = targets > k - 1
        labels = (targets[rows] > k).float()
        pairs += int(rows.sum())
        total = total + F.binary_cross_entropy_with_logits(conditional[rows, k], labels, reduction="sum")
    return total / pairs


def conditional_head(num_classes: int) -> CornHead:
    """A CORN head that takes the K−1 conditional logits themselves as its input."""
    head = CornHead(num_classes - 1, num_classes)
    head.linear = nn.Identity()
    return head


@pytest.mark.parametrize("num_classes", [2, 4, 5])
def test_corn_loss_is_the_published_loss(num_classes: int) -> None:
    generator = torch.Generator().manual_seed(num_classes)
    conditional = torch.randn(64, num_classes - 1, generator=generator) * 3
    targets = torch.randint(0, num_classes, (64,), generator=generator)
    ours = corn_loss(conditional_head(num_classes)(conditional), targets)
    assert torch.allclose(ours, reference_corn_loss(conditional, targets), atol=1e-5)


def test_corn_head_gives_rank_consistent_probabilities() -> None:
    conditional = torch.randn(32, 4, generator=torch.Generator().manual_seed(0)) * 4
    probs = conditional_head(5)(conditional).exp()
    assert torch.allclose(probs.sum(dim=1), torch.ones(32), atol=1e-5)
    above = 1 - probs.cumsum(dim=1)[:, :-1]  # P(grade > k), k = 0..3
    assert (above[:, 1:] <= above[:, :-1] + 1e-6).all()  # never rises with k: the ranks are consistent


def test_class_frequency_weights() -> None:
    weights = class_frequency_weights(torch.tensor([0, 0, 0, 0, 1, 1, 3, 3]), 4)
    assert weights.tolist() == [0.5, 1.0, 0.0, 1.0]  # 8 / (4 · n_k); the absent grade 2 weighs nothing
    criterion = make_criterion("class_weighted", num_classes=4, train_targets=torch.tensor([0, 0, 0, 0, 1, 1, 3, 3]))
    logits, targets = torch.randn(6, 4), torch.tensor([0, 1, 3, 0, 1, 3])
    assert torch.allclose(criterion(logits, targets), F.cross_entropy(logits, targets, weight=weights))


def test_default_step_loss_is_the_papers_cross_entropy() -> None:
    model = build_model("resnet18", num_classes=5)
    images, targets = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 4])
    loss, logits = EagerStep(model.eval(), None, torch.device("cpu"))(images, targets)
    assert torch.equal(loss, F.cross_entropy(logits.float(), targets))


def test_corn_head_is_built_and_refused_where_it_cannot_be() -> None:
    model = build_model("se_densenet121", num_classes=4, head="corn")
    assert isinstance(model.classifier, CornHead) and model.classifier.linear.out_features == 3
    with pytest.raises(KneelibError, match="head"):
        build_model("resnet18", num_classes=5, head="softmax")
    with pytest.raises(KneelibError, match="label smoothing"):
        TrainConfig(**TINY, loss="corn", label_smoothing=0.1).validate()
    with pytest.raises(KneelibError, match="loss must be one of"):
        TrainConfig(**TINY, loss="focal").validate()


@pytest.mark.parametrize("loss", ["corn", "class_weighted"])
def test_a_run_of_each_loss_trains_loads_and_evaluates(loss: str, tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    run = train(TrainConfig(**TINY, loss=loss), runtime=Runtime(device="cpu"), data_dir=data,
                out_dir=tmp_path / "run", progress=False, verbose=False).run_dir
    assert json.loads((run / "config.json").read_text())["loss"] == loss
    assert isinstance(load_run(run).model.fc, CornHead) == (loss == "corn")
    metrics, _ = evaluate_runs([run], data, split="val", device="cpu", progress=False)
    assert 0 <= next(iter(metrics["models"].values()))["accuracy"] <= 1


def test_cli_train_takes_the_loss_and_balanced_sampling(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data")
    assert main(["train", "--arch", "resnet18", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--image-size", "64", "--batch-size", "4", "--loss", "corn", "--balanced", "--quiet"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["loss"], saved["balanced"]) == ("corn", True)
