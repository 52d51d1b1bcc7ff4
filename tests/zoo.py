"""A model zoo written by other people (HF transformers) or replicating their blocks faithfully.

Every entry builds a tiny model with random weights (no downloads) and a batch, and
says how to address it: ``x`` (tensor, tuple of positional inputs, or dict of keyword
inputs), ``y``, ``loss_fn``, ``output`` (for models returning a ModelOutput/tuple),
and names of nodes and parameter groups the test suite checks (``act``: pairs of
activation nodes, ``par``: pairs of parameter groups).

torchvision does not import beside the CPU torch here, so its BasicBlock and
MobileNetV3's squeeze-excite block are replicated from their published structure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

CE = nn.CrossEntropyLoss()


def token_ce(z, y):
    """Mean cross-entropy over all tokens of equal-length sequences = the mean over sequences."""
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))


@dataclass
class Case:
    name: str
    model: nn.Module
    x: Any
    y: torch.Tensor
    loss_fn: Callable = CE
    output: Any = None
    act: list = field(default_factory=list)        # activation pairs (v, w) to check against the oracle
    par: list = field(default_factory=list)        # parameter-group pairs
    nodes: list = field(default_factory=list)      # module names that must be addressable
    backend: str | None = None                     # expected capture backend
    est: tuple | None = None                       # (v, w) pair for the estimate check
    rtol: float = 1e-8                             # against the float64 oracle


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- HF transformers
def gpt2() -> Case:
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=11, n_positions=8, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    m = GPT2LMHeadModel(cfg).eval()
    x = torch.randint(0, 11, (3, 4), generator=_gen(1))
    y = torch.randint(0, 11, (3, 4), generator=_gen(2))
    return Case("gpt2", m, {"input_ids": x}, y, token_ce, "logits",
                act=[("transformer.h.0.attn", "transformer.h.1"), ("transformer.h.0.mlp", "transformer.h.0.mlp")],
                par=[("transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc"), ("lm_head", "transformer.ln_f")],
                nodes=["transformer.h.0", "transformer.h.0.attn", "transformer.h.0.mlp", "transformer.h.1.ln_2",
                       "transformer.wte", "lm_head"],
                backend="export", est=("transformer.h.0.attn", "transformer.h.1"))


def bert() -> Case:
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
                     max_position_embeddings=8, num_labels=3, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    m = BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, 13, (3, 4), generator=_gen(3))
    mask = torch.ones(3, 4, dtype=torch.long)
    mask[0, -1] = 0
    y = torch.randint(0, 3, (3,), generator=_gen(4))
    return Case("bert", m, {"input_ids": ids, "attention_mask": mask}, y, CE, "logits",
                act=[("bert.encoder.layer.0.attention", "bert.encoder.layer.1"), ("bert.pooler", "bert.pooler")],
                par=[("bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.key"),
                     ("classifier", "bert.pooler.dense")],
                nodes=["bert.encoder.layer.1.attention", "bert.encoder.layer.0", "bert.pooler", "classifier"],
                backend="export", est=("bert.encoder.layer.0.attention", "bert.encoder.layer.1"))


def llama() -> Case:
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=11, hidden_size=8, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=8, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0, tie_word_embeddings=False)
    m = LlamaForCausalLM(cfg).eval()
    x = torch.randint(0, 11, (2, 4), generator=_gen(5))
    y = torch.randint(0, 11, (2, 4), generator=_gen(6))
    return Case("llama", m, {"input_ids": x}, y, token_ce, "logits",
                act=[("model.layers.0.self_attn", "model.layers.1.mlp"), ("model.norm", "model.norm")],
                par=[("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"),
                     ("model.layers.1.mlp.gate_proj", "model.norm")],
                nodes=["model.layers.0", "model.layers.0.self_attn", "model.layers.1.mlp", "model.norm", "lm_head"],
                backend="export", est=("model.layers.0.self_attn", "model.layers.1.mlp"),
                rtol=1e-6)   # LlamaRMSNorm and the rotary embedding compute in float32 even in a float64 model


def vit() -> Case:
    from transformers import ViTConfig, ViTForImageClassification
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=12, num_labels=3, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    m = ViTForImageClassification(cfg).eval()
    x = torch.randn(3, 3, 8, 8, generator=_gen(7))
    y = torch.randint(0, 3, (3,), generator=_gen(8))
    return Case("vit", m, x, y, CE, "logits",
                act=[("vit.layers.0.attention", "vit.layers.1"), ("vit.layernorm", "vit.layernorm")],
                par=[("vit.embeddings", "vit.layers.0.attention.q_proj"),
                     ("classifier", "vit.layernorm")],
                nodes=["vit.embeddings", "vit.layers.0", "vit.layers.1.attention", "classifier"],
                backend="export", est=("vit.layers.0.attention", "vit.layers.1"))


# ------------------------------------------------------------------------------ torch.nn zoo
class EncoderClassifier(nn.Module):
    """nn.TransformerEncoder (batch_first, default fast path on in eval) + mean-pool head."""

    def __init__(self, d=8, heads=2, layers=2, classes=3):
        super().__init__()
        self.embed = nn.Linear(4, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=12, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


def transformer_encoder() -> Case:
    torch.manual_seed(0)
    m = EncoderClassifier().eval()
    x = torch.randn(3, 5, 4, generator=_gen(9))
    y = torch.randint(0, 3, (3,), generator=_gen(10))
    return Case("transformer_encoder", m, x, y,
                act=[("encoder.layers.0.self_attn", "encoder.layers.1"), ("encoder.layers.0", "encoder.layers.0")],
                par=[("encoder.layers.0.self_attn", "encoder.layers.0.linear1"), ("head", "encoder.layers.1.norm2")],
                nodes=["encoder.layers.0", "encoder.layers.0.self_attn", "encoder.layers.1.linear2", "encoder"],
                backend="export", est=("encoder.layers.0.self_attn", "encoder.layers.1"))


class MHAClassifier(nn.Module):
    """nn.MultiheadAttention (returns a tuple) used as self-attention with a residual."""

    def __init__(self, d=8, classes=3):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.inp(x)
        a, _ = self.attn(h, h, h)
        return self.head(self.norm(h + a).mean(1))


def mha() -> Case:
    torch.manual_seed(0)
    m = MHAClassifier().eval()
    x = torch.randn(3, 5, 4, generator=_gen(11))
    y = torch.randint(0, 3, (3,), generator=_gen(12))
    return Case("mha", m, x, y, act=[("inp", "attn"), ("attn", "norm")],
                par=[("attn", "inp"), ("attn", "attn")], nodes=["attn", "norm", "inp"], est=("inp", "attn"))


class RNNClassifier(nn.Module):
    def __init__(self, cell="lstm", classes=3):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(4, 6, batch_first=True)
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def lstm() -> Case:
    torch.manual_seed(0)
    m = RNNClassifier("lstm").eval()
    x = torch.randn(3, 5, 4, generator=_gen(13))
    y = torch.randint(0, 3, (3,), generator=_gen(14))
    return Case("lstm", m, x, y, act=[("rnn", "head"), ("x", "rnn")], par=[("rnn", "head"), ("rnn", "rnn")],
                nodes=["rnn", "head"], est=("x", "rnn"))


def gru() -> Case:
    torch.manual_seed(0)
    m = RNNClassifier("gru").eval()
    x = torch.randn(3, 5, 4, generator=_gen(15))
    y = torch.randint(0, 3, (3,), generator=_gen(16))
    return Case("gru", m, x, y, act=[("rnn", "head"), ("x", "rnn")], par=[("rnn", "head"), ("rnn", "rnn")],
                nodes=["rnn", "head"], est=("x", "rnn"))


class SqueezeExcitation(nn.Module):
    """MobileNetV3's SE block (torchvision.ops.SqueezeExcitation with Hardsigmoid scale)."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class MobileBlock(nn.Module):
    """MobileNetV3 inverted residual: expand 1x1, depthwise 3x3, SE, project 1x1, Hardswish."""

    def __init__(self, c=4, e=8, classes=3):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e),
                                       nn.Hardswish())
        self.se = SqueezeExcitation(e, 4)
        self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        h = self.project(self.se(self.depthwise(self.expand(x))))
        return self.head((x + h).mean((2, 3)))


def _randomize_bn(m: nn.Module, seed: int) -> nn.Module:
    g = _gen(seed)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
    return m


def mobilenet_se() -> Case:
    torch.manual_seed(0)
    m = _randomize_bn(MobileBlock(), 17).eval()
    x = torch.randn(3, 4, 4, 4, generator=_gen(18))
    y = torch.randint(0, 3, (3,), generator=_gen(19))
    return Case("mobilenet_se", m, x, y, act=[("se", "project"), ("se.scale_activation", "depthwise")],
                par=[("se.fc2", "se.fc1"), ("expand.0", "head")], nodes=["se", "se.scale_activation", "project"],
                est=("depthwise", "se"))


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock: one ReLU module used twice, in-place residual add.

    Kept apart from :class:`hessexplore.models.BasicBlock` (which adds out of place) on purpose:
    the in-place ``out += identity`` and ``ReLU(inplace=True)`` are what capture must handle.
    """

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class TinyResNet(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(4, 4))
        down = nn.Sequential(nn.Conv2d(4, 6, 1, 2, bias=False), nn.BatchNorm2d(6))
        self.layer2 = nn.Sequential(BasicBlock(4, 6, 2, down))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_basic() -> Case:
    torch.manual_seed(0)
    m = _randomize_bn(TinyResNet(), 20).eval()
    x = torch.randn(2, 3, 4, 4, generator=_gen(21))
    y = torch.randint(0, 3, (2,), generator=_gen(22))
    return Case("resnet_basic", m, x, y, act=[("layer1.0", "layer2.0"), ("layer1.0.relu", "layer2")],
                par=[("layer1.0.conv1", "layer2.0.conv2"), ("fc", "layer2.0.downsample.0")],
                nodes=["layer1.0", "layer1.0.relu", "layer1.0.relu@1", "layer2.0.downsample", "fc"],
                backend="fx", est=("layer1.0", "layer2.0"))


class OptionalArgs(nn.Module):
    """A forward with optional arguments (a mask and a flag), as timm and HF write them."""

    def __init__(self, classes=3):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, classes)

    def forward(self, x, mask=None, scale: float = 1.0, return_hidden: bool = False):
        h = torch.tanh(self.inp(x))
        if mask is not None:
            h = h * mask
        h = torch.tanh(self.mid(h)) * scale
        out = self.head(h)
        return (out, h) if return_hidden else out


def optional_args() -> Case:
    torch.manual_seed(0)
    m = OptionalArgs().eval()
    x = torch.randn(4, 4, generator=_gen(23))
    y = torch.randint(0, 3, (4,), generator=_gen(24))
    return Case("optional_args", m, x, y, act=[("inp", "mid"), ("mid", "head")], par=[("inp", "mid")],
                nodes=["inp", "mid", "head"], est=("inp", "mid"))


class TiedLM(nn.Module):
    """Embedding tied to the output projection (weight sharing as in GPT-2 / T5)."""

    def __init__(self, vocab=7, d=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids):
        return self.out(torch.tanh(self.mix(self.embed(ids))))


def tied() -> Case:
    torch.manual_seed(0)
    m = TiedLM().eval()
    x = torch.randint(0, 7, (3, 4), generator=_gen(25))
    y = torch.randint(0, 7, (3, 4), generator=_gen(26))
    return Case("tied", m, x, y, token_ce, act=[("embed", "mix"), ("mix", "out")],
                par=[("embed", "mix"), ("out", "out")], nodes=["embed", "mix", "out"], est=("embed", "mix"))


class ShapeBranch(nn.Module):
    """Branches on a shape (fx cannot, torch.export can) and returns a dict of outputs."""

    def __init__(self, classes=3):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        if x.shape[-1] > 4:                      # crop wide inputs
            x = x[..., :4]
        h = torch.nn.functional.silu(self.inp(x))
        return {"hidden": h, "logits": self.head(h)}


def shape_branch() -> Case:
    torch.manual_seed(0)
    m = ShapeBranch().eval()
    x = torch.randn(4, 5, generator=_gen(27))
    y = torch.randint(0, 3, (4,), generator=_gen(28))
    return Case("shape_branch", m, x, y, output="logits", act=[("x", "inp"), ("inp", "head")],
                par=[("inp", "head")], nodes=["inp", "head"], backend="export", est=("inp", "head"))


CASES = {f.__name__: f for f in (gpt2, bert, llama, vit, transformer_encoder, mha, lstm, gru, mobilenet_se,
                                 resnet_basic, optional_args, tied, shape_branch)}
