"""kneelib.models: architectures, SE placement, parameter counts, weight loading, ``kneelib models``."""

from __future__ import annotations

import json
import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from kneelib.cli import main
from kneelib.errors import KneelibError
from kneelib.models import (
    SqueezeExcite,
    build_model,
    count_se_blocks,
    get_spec,
    list_models,
)
from kneelib.models.summary import summarize
from kneelib.models.weights import cached_checkpoint, load_backbone

#: parameter counts of the paper's reference implementation at 5 classes
PAPER_PARAMS = {
    "resnet18": 11_179_077,
    "resnet34": 21_287_237,
    "resnet50": 23_518_277,
    "densenet121": 6_958_981,
    "se_resnet18": 11_266_117,
    "se_resnet34": 21_444_421,
    "se_resnet50": 26_049_269,
    "se_densenet121": 10_008_263,
}
SE_BLOCKS = {"se_resnet18": 8, "se_resnet34": 16, "se_resnet50": 16, "se_densenet121": 67}
NAMES = list(PAPER_PARAMS)


def meta_model(name: str, num_classes: int = 5) -> nn.Module:
    """The model on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return build_model(name, num_classes=num_classes)


def torchvision_model(name: str) -> nn.Module:
    """torchvision's plain 1000-class counterpart of ``name``, randomly initialised."""
    return torchvision.models.get_model(name.removeprefix("se_"), weights=None)


def randomized(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor replaced by random values (so equality after loading proves a copy)."""
    gen = torch.Generator().manual_seed(0)
    return {
        k: torch.rand(v.shape, generator=gen) if v.is_floating_point() else torch.full_like(v, 7)
        for k, v in state_dict.items()
    }


def test_list_models() -> None:
    assert list_models() == [
        "resnet18", "resnet34", "resnet50", "densenet121",
        "se_resnet18", "se_resnet34", "se_resnet50", "se_densenet121",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_reference(name: str) -> None:
    n = sum(p.numel() for p in meta_model(name).parameters())
    assert abs(n - PAPER_PARAMS[name]) <= 0.001 * PAPER_PARAMS[name]
    assert n == PAPER_PARAMS[name]  # in fact exact


@pytest.mark.parametrize("name", NAMES)
def test_se_block_count(name: str) -> None:
    assert count_se_blocks(meta_model(name)) == SE_BLOCKS.get(name, 0)


def test_se_squeeze_width_and_bias() -> None:
    se = SqueezeExcite(96)
    assert se.fc1.out_channels == 6 and se.fc2.in_channels == 6  # 96 // 16
    assert sum(p.numel() for p in se.parameters()) == 2 * 96 * 6 + 6 + 96
    assert sum(p.numel() for p in SqueezeExcite(96, bias=False).parameters()) == 2 * 96 * 6
    x = torch.randn(2, 96, 5, 5)
    s = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * s)


def test_se_densenet_placement() -> None:
    model = meta_model("se_densenet121")
    se = {name: m.channels for name, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    assert [se[f"features.se_denseblock{i}"] for i in range(1, 5)] == [64, 128, 256, 512]
    assert [se[f"features.se_transition{i}"] for i in range(1, 4)] == [256, 512, 1024]
    assert se["features.se0"] == 64 and se["features.se5"] == 1024
    layers = [k for k in se if ".denselayer" in k]
    assert len(layers) == 58
    assert se["features.denseblock1.denselayer2.se"] == 96  # the layer's concatenated input
    assert se["features.denseblock4.denselayer16.se"] == 512 + 15 * 32


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50", "se_densenet121"])
def test_se_model_with_identity_se_is_the_plain_model(name: str) -> None:
    """SE blocks are pure insertions: with every SE made the identity, the plain network remains."""
    torch.manual_seed(0)
    # the builders' own init: build_model's from-scratch zero-init would zero every SE input
    plain = get_spec(name.removeprefix("se_")).builder(num_classes=5).eval()
    se_model = get_spec(name).builder(num_classes=5).eval()
    missing, unexpected = se_model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".se" in k for k in missing)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert not torch.allclose(se_model(x), plain(x))
        for m in se_model.modules():
            if isinstance(m, SqueezeExcite):
                m.forward = lambda t: t  # type: ignore[method-assign]
        torch.testing.assert_close(se_model(x), plain(x))


def test_dense_block_concatenates_the_unscaled_input() -> None:
    torch.manual_seed(0)
    block = build_model("se_densenet121", num_classes=5).features.denseblock1.eval()
    x = torch.randn(1, 64, 8, 8)
    with torch.inference_mode():
        y = block(x)
    assert y.shape == (1, 64 + 6 * 32, 8, 8)
    assert torch.equal(y[:, :64], x)  # the SE on each layer's input rescales only the layer's copy


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_224_and_64(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5).eval()
    with torch.inference_mode():
        for size, batch in ((224, 1), (64, 2)):
            out = model(torch.randn(batch, 3, size, size))
            assert out.shape == (batch, 5)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50", "se_densenet121"])
def test_gradients_reach_every_se_block(name: str) -> None:
    torch.manual_seed(0)
    model = get_spec(name).builder(num_classes=5).train()  # without build_model's zero-init (see above)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 3]))
    loss.backward()
    blocks = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(blocks) == SE_BLOCKS[name]
    for block in blocks:
        for p in block.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_only_changes_head(name: str) -> None:
    five = {k: v.shape for k, v in meta_model(name, 5).state_dict().items()}
    four = {k: v.shape for k, v in meta_model(name, 4).state_dict().items()}
    assert five.keys() == four.keys()
    head = get_spec(name).head
    assert {k for k in five if five[k] != four[k]} == {f"{head}.weight", f"{head}.bias"}
    assert four[f"{head}.weight"][0] == 4


def _check_loaded(model: nn.Module, checkpoint: dict[str, torch.Tensor], name: str) -> None:
    """Every backbone tensor equals the checkpoint's; SE blocks and head are reported new."""
    own = model.state_dict()
    head = get_spec(name).head
    backbone = [k for k in checkpoint if not k.startswith(head + ".")]
    for key in backbone:
        assert torch.equal(own[key], checkpoint[key]), key
    report = model.weights_report
    assert set(report.loaded) == set(backbone)
    assert set(report.new_head) == {f"{head}.weight", f"{head}.bias"}
    assert set(report.dropped) == {f"{head}.weight", f"{head}.bias"}
    assert all(".se" in k for k in report.new_se)
    assert len(report.new_se) == (0 if name not in SE_BLOCKS else len(
        [k for k in own if re.search(r"\bse(\d|_\w+)?\.fc[12]\.", k)]))
    assert set(report.loaded) | set(report.new) == set(own)


@pytest.mark.parametrize("name", ["resnet18", "se_resnet50", "se_densenet121"])
def test_local_state_dict_maps_every_backbone_tensor(name: str, tmp_path: Path) -> None:
    checkpoint = randomized(torchvision_model(name).state_dict())
    saved = dict(checkpoint)
    if "densenet" in name:  # old-style keys as in torchvision's published DenseNet files
        saved = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in saved.items()}
        assert any(".norm.1." in k for k in saved)
    path = tmp_path / f"{name}.pth"
    torch.save(saved, path)
    model = build_model(name, num_classes=5, weights=path)
    _check_loaded(model, checkpoint, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet34", "resnet50", "densenet121", "se_resnet18", "se_resnet34"])
def test_state_dict_mapping_other_archs(name: str) -> None:
    checkpoint = randomized(torchvision_model(name).state_dict())
    model = build_model(name, num_classes=5)
    model.weights_report = load_backbone(model, checkpoint, head=get_spec(name).head, source="test")
    _check_loaded(model, checkpoint, name)


def test_backbone_mismatch_is_loud() -> None:
    model = meta_model("se_resnet18")
    checkpoint = meta_model("resnet18").state_dict()
    checkpoint["layer1.0.conv1.weight"] = torch.empty(32, 64, 3, 3, device="meta")
    with pytest.raises(KneelibError, match=r"shape mismatch.*layer1\.0\.conv1\.weight"):
        load_backbone(model, checkpoint, head="fc", source="x.pth")
    with pytest.raises(KneelibError, match=r"do not fit resnet34: missing from the checkpoint: layer1\.2\."):
        load_backbone(meta_model("resnet34"), meta_model("resnet18").state_dict(), head="fc",
                      source="x.pth", target="resnet34")
    with pytest.raises(KneelibError, match=r"do not fit.*not in the model: layer1\.0\.conv3\.weight"):
        load_backbone(model, meta_model("resnet50").state_dict(), head="fc", source="x.pth")


def test_missing_weights_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(KneelibError, match="nope.pth"):
        build_model("resnet18", num_classes=5, weights=tmp_path / "nope.pth")
    with pytest.raises(KneelibError, match="unknown model 'vgg16'"):
        build_model("vgg16", num_classes=5)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache and a download that always fails (as with no internet)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch"


def test_imagenet_offline_error_names_the_cache_file(offline: Path) -> None:
    expected = offline / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert cached_checkpoint(get_spec("resnet18").imagenet) == expected
    with pytest.raises(KneelibError) as info:
        build_model("resnet18", num_classes=5, weights="imagenet", progress=False)
    assert str(expected) in str(info.value) and "URLError" in str(info.value)


def test_imagenet_uses_the_cache_without_network(offline: Path) -> None:
    checkpoint = randomized(torchvision_model("se_resnet18").state_dict())
    cached = cached_checkpoint(get_spec("se_resnet18").imagenet)
    cached.parent.mkdir(parents=True)
    torch.save(checkpoint, cached)
    model = build_model("se_resnet18", num_classes=3, weights="imagenet")
    _check_loaded(model, checkpoint, "se_resnet18")
    assert "ImageNet" in model.weights_report.source and len(model.weights_report.new_se) == 16


def test_cli_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in PAPER_PARAMS]
    assert [r[0] for r in rows] == NAMES
    for row in rows:
        assert row[1] == f"{PAPER_PARAMS[row[0]]:,}"
        assert int(row[-1]) == SE_BLOCKS.get(row[0], 0)
        assert 3.0 < float(row[2]) < 9.0  # GFLOPs at 224 px
    assert "GFLOPs@224px" in out


def test_cli_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0  # summaries are cached: no second counting pass
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n: r["parameters"] for n, r in rows.items()} == PAPER_PARAMS
    assert rows["se_densenet121"]["se_blocks"] == 67
    assert rows["resnet18"]["gmacs"] == pytest.approx(rows["resnet18"]["gflops"] / 2)
    assert 1.7 < rows["resnet18"]["gmacs"] < 1.9  # the well-known 1.8 GMACs of ResNet-18


def test_summary_num_classes() -> None:
    four = summarize("resnet18", num_classes=4)
    assert four.parameters == PAPER_PARAMS["resnet18"] - 513  # one output of 512 weights + bias fewer
    assert four.num_classes == 4


def test_capture_excitations_returns_one_sigmoid_vector_per_se_block() -> None:
    from kneelib.models import capture_excitations

    model = build_model("se_resnet18", num_classes=5)
    model.train()
    s = capture_excitations(model, torch.randn(2, 3, 64, 64))
    assert len(s) == count_se_blocks(model) == 8
    assert model.training  # mode restored
    widths = sorted({v.shape[1] for v in s.values()})
    assert widths == [64, 128, 256, 512]
    assert all(v.shape[0] == 2 and float(v.min()) >= 0 and float(v.max()) <= 1 for v in s.values())


@pytest.mark.parametrize("name", ["resnet18", "se_resnet50"])
def test_from_scratch_resnets_start_each_block_as_the_identity(name: str, tmp_path: Path) -> None:
    """weights=None: every residual branch's last BN starts at zero; loaded weights replace that."""
    last_bn = "bn3" if "50" in name else "bn2"
    scratch = build_model(name, num_classes=5)
    gammas = [m.weight for n, m in scratch.named_modules() if n.endswith(last_bn)]
    assert gammas and all(torch.count_nonzero(g) == 0 for g in gammas)
    assert torch.count_nonzero(scratch.bn1.weight) > 0  # only the branches' last BN
    torch.save(get_spec(name).builder(num_classes=1000).state_dict(), tmp_path / "w.pth")
    loaded = build_model(name, num_classes=5, weights=tmp_path / "w.pth")
    assert all(torch.count_nonzero(m.weight) > 0 for n, m in loaded.named_modules() if n.endswith(last_bn))
