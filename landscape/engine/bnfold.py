"""BatchNorm folded into the preceding conv/linear layer, refolded per point by a few index ops."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import first_line
from .flat import ALIGN, FlatWeights

log = logging.getLogger(__name__)

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bn_folder(model: nn.Module, weights: FlatWeights, option: str, device: torch.device) -> BNFolder | None:
    """The folder where `eval.fold_bn` asks for one and the model has a conv/linear -> BatchNorm pair.

    auto: on where there is BatchNorm; measured 1.0-1.2x faster on CPU, 1.06x on an H200 (BENCHMARKS.md).
    """
    if option == "false" or (option == "auto" and not any(isinstance(m, BN_TYPES) for m in model.modules())):
        return None
    say = log.warning if option == "true" else log.info
    try:
        folder = BNFolder(model, weights, device)
    except Exception as err:  # noqa: BLE001 - fx cannot trace every model (data-dependent control flow)
        say("eval.fold_bn: cannot trace the model (%s); running unfolded", first_line(err))
        return None
    if not folder.pairs:
        say("eval.fold_bn: no conv/linear -> BatchNorm pair found; running unfolded")
    return folder if folder.pairs else None


def _aligned(n: int) -> int:
    """Folded weights are aligned like the flat ones."""
    return -(-n // ALIGN) * ALIGN


def _pairs(net: torch.fx.GraphModule, weights: FlatWeights) -> list[tuple]:
    """(bn node, conv node, conv, bn) for each BatchNorm fed by a conv/linear layer alone, foldable here."""
    modules = dict(net.named_modules())
    params, buffers = {id(p) for p in weights.params}, {id(b) for b in weights.buffers}
    pairs = []
    for node in list(net.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), BN_TYPES):
            continue
        bn, prev = modules[node.target], node.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        layer = modules.get(prev.target)
        if not isinstance(layer, CONV_TYPES + (nn.Linear,)) or not bn.affine or bn.running_mean is None:
            continue
        if isinstance(layer, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
            continue
        if id(layer.weight) in params and id(bn.running_var) in buffers:
            pairs.append((node, prev, layer, bn))
    return pairs


class _Folded(nn.Module):
    """A conv or linear layer whose weight and bias are BatchNorm-folded buffers (views, set per point)."""

    def __init__(self, layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.linear = isinstance(layer, nn.Linear)
        object.__setattr__(self, "_layer", layer)  # for its conv settings only: not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            return F.linear(x, self.weight, self.bias)
        return self._layer._conv_forward(x, self.weight, self.bias)


class BNFolder:
    """`conv -> BatchNorm` pairs of a traced model folded into one layer, refolded per point by index ops.

    For every channel c of a pair: s_c = gamma_c / sqrt(var_c + eps), W'_c = W_c s_c,
    b'_c = beta_c + (b_c - mean_c) s_c. Gammas, betas and conv weights are gathered from the flat
    parameter vector, means and variances from the flat buffer vector, so a refold costs ~8 kernels
    for the whole network, for one point (N,) or for P points at once (P, N).
    """

    def __init__(self, model: nn.Module, weights: FlatWeights, device: torch.device):
        self.net = torch.fx.symbolic_trace(model)
        pairs = _pairs(self.net, weights)
        self.pairs = len(pairs)
        if pairs:
            self._index(pairs, weights, device)
            self._rewrite(pairs)

    def _index(self, pairs: list[tuple], weights: FlatWeights, device: torch.device) -> None:
        """Index vectors: per channel (gamma, beta: params; mean, var: buffers; eps) and per weight element."""
        pindex = {id(p): i for i, p in enumerate(weights.params)}
        bindex = {id(b): i for i, b in enumerate(weights.buffers)}
        players, blayout = weights.layout, weights.blayout
        rng = lambda t, lay, idx: torch.arange(lay.specs[idx][0], lay.specs[idx][0] + t.numel())  # noqa: E731
        g, be, mu, var, eps, widx, sidx, cb_at, cb_idx = [], [], [], [], [], [], [], [], []
        self.wspecs, woff, coff = [], 0, 0
        for _, _, layer, bn in pairs:
            ch = bn.num_features
            g.append(rng(bn.weight, players, pindex[id(bn.weight)]))
            be.append(rng(bn.bias, players, pindex[id(bn.bias)]))
            mu.append(rng(bn.running_mean, blayout, bindex[id(bn.running_mean)]))
            var.append(rng(bn.running_var, blayout, bindex[id(bn.running_var)]))
            eps.append(torch.full((ch,), float(bn.eps)))
            w_off, shape, stride = players.specs[pindex[id(layer.weight)]]
            n = _aligned(layer.weight.numel())  # the padding maps onto the flat vector's zero padding
            widx.append(torch.arange(w_off, w_off + n))
            channel = torch.zeros(n, dtype=torch.long)  # output channel of each element, in storage order
            channel.as_strided(shape, stride).copy_(
                torch.arange(ch).view(-1, *([1] * (len(shape) - 1))).expand(shape))
            sidx.append(channel + coff)
            if layer.bias is not None:
                cb_at.append(torch.arange(coff, coff + ch))
                cb_idx.append(rng(layer.bias, players, pindex[id(layer.bias)]))
            self.wspecs.append((woff, shape, stride, coff, ch))
            woff, coff = woff + n, coff + ch
        to = lambda ts: torch.cat(ts).to(device)  # noqa: E731
        self.g, self.be, self.mu, self.var, self.eps = to(g), to(be), to(mu), to(var), to(eps)
        self.widx, self.sidx = to(widx), to(sidx)
        self.cb = (to(cb_at), to(cb_idx)) if cb_at else None
        self.nw, self.nc = woff, coff
        self.weights = torch.zeros(1, woff, device=device)  # loop mode: row 0, the current point
        self.biases = torch.zeros(1, coff, device=device)

    def _rewrite(self, pairs: list[tuple]) -> None:
        """Each conv -> BatchNorm pair of the traced copy becomes one `_Folded` layer (the model keeps its own)."""
        for k, (node, prev, layer, bn) in enumerate(pairs):
            w, b = self.views(self.weights, self.biases, k)
            name = f"bnfolded_{k}"
            self.net.add_submodule(name, _Folded(layer, w[0], b[0]))
            prev.target = name
            node.replace_all_uses_with(prev)
            self.net.graph.erase_node(node)
        self.net.recompile()
        self.net.delete_all_unused_submodules()
        self.names = [f"bnfolded_{k}" for k in range(len(pairs))]

    def views(self, weights: torch.Tensor, biases: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Folded weight and bias of pair k, with the leading point dim of `weights` (P, nw)."""
        woff, shape, stride, coff, ch = self.wspecs[k]
        w = weights.as_strided((weights.shape[0], *shape), (weights.stride(0), *stride),
                               weights.storage_offset() + woff)
        return w, biases[:, coff:coff + ch]

    def fold(self, params: torch.Tensor, buffers: torch.Tensor, weights: torch.Tensor,
             biases: torch.Tensor) -> None:
        """Folded weights (P, nw) and biases (P, nc) from parameters (P, N) and buffers (P or 1, Nb)."""
        scale = torch.rsqrt(buffers[:, self.var] + self.eps) * params[:, self.g]
        torch.sub(params[:, self.be], buffers[:, self.mu] * scale, out=biases)
        if self.cb is not None:
            at, idx = self.cb
            biases[:, at] += params[:, idx] * scale[:, at]
        torch.mul(params[:, self.widx], scale[:, self.sidx], out=weights)
