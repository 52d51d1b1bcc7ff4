"""The ResNet-18 replica and the Exp 6 driver (the full experiment runs in notebook 07 and `hessexplore exp6`)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import hessexplore as hx
from hessexplore import cli, exp6, models


def test_resnet18_replica_matches_torchvision_layout():
    # torchvision.models.resnet18() has 11,689,512 parameters (ImageNet stem, 1000 classes)
    m = models.ResNet18(num_classes=1000, stem="imagenet")
    assert sum(p.numel() for p in m.parameters()) == 11_689_512
    keys = set(m.state_dict())
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.weight",
              "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.conv2.weight",
              "fc.weight", "fc.bias"):
        assert k in keys, k
    assert "layer1.0.downsample.0.weight" not in keys          # stride 1, same width: identity shortcut
    cifar = models.ResNet18(num_classes=10)
    assert sum(p.numel() for p in cifar.parameters()) == 11_173_962
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # one ReLU module reused twice per block, as in torchvision
    blk = cifar.layer1[0]
    calls = []
    blk.relu.register_forward_hook(lambda *a: calls.append(1))
    blk(torch.randn(1, 64, 8, 8))
    assert len(calls) == 2


@pytest.mark.parametrize("shortcut", [True, False])
def test_resnet_stages_are_addressable_and_relu_gap_vanishes(shortcut):
    torch.manual_seed(0)
    m = models.ResNet18(num_classes=3, width=2, shortcut=shortcut).eval()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    s = hx.Session(m, nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
    for n in models.RESNET_STAGES:
        s.node(n)
    b = s.block("layer3", "layer4")                        # 16 × 8 per sample: exact is cheap
    assert b.norm_tensor <= 1e-12 * b.resonance            # piecewise linear: H^T ≡ 0


def test_exp6_small_run_and_claims(tmp_path):
    res = exp6.run(activations=("relu",), width=2, size=8, train_steps=3, batch=8, probes=8, d_probes=2)
    assert [r.name for r in res.runs] == ["residual-relu", "plain-relu"]
    r = res.get("relu", True)
    assert len(r.init.C) == 5 and len(r.init.D) == 4 and len(r.losses) == 3 and r.trained is not None
    assert r.init.C[0][0] == 1.0 and r.init.max_gap() <= 1e-4
    claims = {c: ok for c, ok, _ in exp6.check(res)}
    assert claims["residual-relu (init): GN-Gap ≈ 0 (≤ 0.0001)"]
    assert "relu (init): residual keeps C(stem, layer4) above plain" in claims
    js = json.loads(json.dumps(res.to_json()))
    assert js["stages"] == list(models.RESNET_STAGES) and len(js["runs"]) == 2
    assert "residual-relu" in res.table()


def test_exp6_command_is_registered():
    args = cli.build_parser().parse_args(["exp6", "--width", "2", "--probes", "8", "--no-check"])
    assert args.func is exp6.cmd and args.width == 2 and args.probes == 8 and args.no_check
