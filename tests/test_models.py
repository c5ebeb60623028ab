"""Shapes, parameter counts, skip semantics, TAAF maths and gradient flow of the model zoo."""
import pytest
import torch
from torch import nn

from landscape.models.densenet import densenet_bc
from landscape.models.mlp import ACTIVATIONS, TAAF, mlp
from landscape.models.resnet import BasicBlock, cifar_resnet, resnet20, resnet56, resnet110

CIFAR = (2, 3, 32, 32)
DIGITS = (2, 1, 8, 8)

FACTORIES = {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet20_noskip": lambda **kw: resnet20(skip=False, **kw),
    "densenet_bc40": lambda **kw: densenet_bc(depth=40, **kw),
    "mlp": lambda in_channels, num_classes: mlp(in_channels * 8 * 8, num_classes, hidden=(32, 16)),
    "mlp_taaf": lambda in_channels, num_classes: mlp(in_channels * 8 * 8, num_classes, hidden=(32,), taaf=True),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("shape", [CIFAR, DIGITS])
def test_output_shape(name, shape):
    if name.startswith("mlp") and shape == CIFAR:
        shape = (2, 3, 8, 8)  # the MLP's input size is fixed at build time; any 4-d shape is flattened
    model = FACTORIES[name](in_channels=shape[1], num_classes=7)
    assert model(torch.randn(shape)).shape == (2, 7)


def test_densenet_bc_default_depth_runs():
    assert densenet_bc(num_classes=10).eval()(torch.randn(CIFAR)).shape == (2, 10)


def test_resnet20_param_count():
    # stem: conv 3*16*9 + BN 2*16                                         =     464
    # stage 1: 3 blocks x (2 convs 16*16*9 + 2 BNs 2*16)                  =  14,016
    # stage 2: first block 16*32*9 + 32*32*9 + 2 BNs 2*32
    #          + 1x1 shortcut 16*32 + BN 2*32                             =  14,528
    #          2 blocks x (2 convs 32*32*9 + 2 BNs 2*32)                  =  37,120
    # stage 3: first block 32*64*9 + 64*64*9 + 2 BNs 2*64
    #          + 1x1 shortcut 32*64 + BN 2*64                             =  57,728
    #          2 blocks x (2 convs 64*64*9 + 2 BNs 2*64)                  = 147,968
    # linear: 64*10 + 10                                                  =     650
    # total (option B)                                                    = 272,474
    assert n_params(resnet20()) == 272_474
    # noskip drops both projection shortcuts: 272,474 - (512+64) - (2048+128) = 269,722,
    # which is also the count of the option-A (parameter-free shortcut) ResNet-20
    assert n_params(resnet20(skip=False)) == 269_722


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_resnet_depth_is_6n_plus_2_weight_layers(depth):
    model = cifar_resnet(depth)
    conv3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(conv3x3) + len(linear) == depth


def test_resnet56_deeper_than_resnet20():
    assert n_params(resnet56()) > n_params(resnet20())
    assert n_params(resnet110()) > n_params(resnet56())


@pytest.mark.parametrize("depth", [0, 7, 21])
def test_resnet_rejects_bad_depth(depth):
    with pytest.raises(ValueError):
        cifar_resnet(depth)


def test_noskip_params_are_skip_params_minus_shortcuts():
    skip, noskip = resnet20().state_dict(), resnet20(skip=False).state_dict()
    shared = {k: v.shape for k, v in skip.items() if ".shortcut." not in k}
    assert {k: v.shape for k, v in noskip.items()} == shared
    assert len(shared) < len(skip)


def test_noskip_changes_forward_output():
    torch.manual_seed(0)
    skip = resnet20().eval()
    noskip = resnet20(skip=False).eval()
    noskip.load_state_dict({k: v for k, v in skip.state_dict().items() if ".shortcut." not in k})
    x = torch.randn(CIFAR)
    assert not torch.allclose(skip(x), noskip(x))


@pytest.mark.parametrize("skip", [True, False])
def test_basic_block_adds_identity_only_with_skip(skip):
    block = BasicBlock(16, 16, skip=skip).eval()
    nn.init.zeros_(block.conv2.weight)  # residual branch outputs bn2(0) = 0 with fresh BN statistics
    x = torch.randn(2, 16, 8, 8)
    expected = torch.relu(x) if skip else torch.zeros_like(x)
    assert torch.equal(block(x), expected)


def test_basic_block_projection_shortcut():
    block = BasicBlock(16, 32, stride=2)
    assert [type(m) for m in block.shortcut] == [nn.Conv2d, nn.BatchNorm2d]
    assert block.shortcut[0].kernel_size == (1, 1) and block.shortcut[0].stride == (2, 2)
    assert isinstance(BasicBlock(16, 16).shortcut, nn.Identity)


def test_densenet_bc_param_counts():
    # matches Huang et al. Table 2: DenseNet-BC (L=100, k=12) has 0.8M parameters
    assert n_params(densenet_bc(depth=100, growth_rate=12)) == 769_162
    assert n_params(densenet_bc(depth=40, growth_rate=12)) == 176_122


def test_densenet_bc_layer_count_and_width():
    model = densenet_bc(depth=40, growth_rate=12)
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weight_layers) == 40
    # 24 -> +6*12 = 96 -> 48 -> +72 = 120 -> 60 -> +72 = 132 features into the head
    assert model.linear.in_features == 132


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_taaf_default_init_is_plain_activation(name):
    torch.manual_seed(0)
    y = torch.randn(5, 7)
    assert torch.equal(TAAF(7, name)(y), ACTIVATIONS[name]()(y))


def test_taaf_formula_per_neuron():
    torch.manual_seed(0)
    taaf = TAAF(4, "tanh")
    alpha, beta, gamma, delta = (torch.randn(4) for _ in range(4))
    with torch.no_grad():
        taaf.alpha.copy_(alpha), taaf.beta.copy_(beta), taaf.gamma.copy_(gamma), taaf.delta.copy_(delta)
    y = torch.randn(3, 4)
    expected = torch.stack([alpha[j] * torch.tanh(beta[j] * y[:, j] + gamma[j]) + delta[j] for j in range(4)], 1)
    torch.testing.assert_close(taaf(y), expected)


def test_mlp_structure_and_taaf_params():
    model = mlp(64, 10, hidden=(32, 16), activation="gelu", taaf=True)
    assert [n for n, _ in model.named_parameters()] == [
        "1.weight", "1.bias", "2.alpha", "2.beta", "2.gamma", "2.delta",
        "3.weight", "3.bias", "4.alpha", "4.beta", "4.gamma", "4.delta",
        "5.weight", "5.bias",
    ]  # fmt: skip
    assert all(p.shape == (32,) for p in model[2].parameters())
    assert all(p.shape == (16,) for p in model[4].parameters())
    assert isinstance(model[2].f, nn.GELU)
    assert n_params(model) == n_params(mlp(64, 10, hidden=(32, 16))) + 4 * (32 + 16)


def test_mlp_plain_activation_and_bad_name():
    model = mlp(10, 3, hidden=(5,), activation="elu")
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear, nn.ELU, nn.Linear]
    with pytest.raises(ValueError):
        mlp(10, 3, activation="swish")


@pytest.mark.parametrize(
    "build",
    [
        lambda: cifar_resnet(8, in_channels=1),
        lambda: cifar_resnet(8, in_channels=1, skip=False),
        lambda: densenet_bc(depth=16, growth_rate=4, in_channels=1),
        lambda: mlp(64, 10, hidden=(16, 16), activation="sigmoid", taaf=True),
    ],
    ids=["resnet8", "resnet8_noskip", "densenet_bc16", "mlp_taaf"],
)
def test_backward_reaches_every_parameter(build):
    torch.manual_seed(0)
    model = build()
    nn.functional.cross_entropy(model(torch.randn(DIGITS)), torch.tensor([3, 7])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
