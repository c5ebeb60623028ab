"""BatchNorm folded into the preceding conv/linear layer, refolded per point by a few index ops."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .flat import ALIGN, FlatLayout

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

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

    def __init__(self, model: nn.Module, params: list[torch.Tensor], param_layout: FlatLayout,
                 buffers: list[torch.Tensor], buffer_layout: FlatLayout, device: torch.device):
        self.net = torch.fx.symbolic_trace(model)
        modules = dict(self.net.named_modules())
        pindex = {id(p): i for i, p in enumerate(params)}
        bindex = {id(b): i for i, b in enumerate(buffers)}
        pairs = []
        for node in list(self.net.graph.nodes):
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
            if id(layer.weight) not in pindex or id(bn.running_var) not in bindex:
                continue
            pairs.append((node, prev, layer, bn))
        self.pairs = len(pairs)
        if not pairs:
            return
        # index vectors: per channel (gamma, beta: params; mean, var: buffers; eps) and per weight element
        g, be, mu, var, eps, widx, sidx, cb_at, cb_idx = [], [], [], [], [], [], [], [], []
        aligned = lambda n: -(-n // ALIGN) * ALIGN  # noqa: E731 - the folded weights are aligned like the flat ones
        w_numel = sum(aligned(layer.weight.numel()) for _, _, layer, _ in pairs)
        self.nw, self.nc = w_numel, sum(bn.num_features for *_, bn in pairs)
        wspecs, woff, coff = [], 0, 0
        for _, _, layer, bn in pairs:
            ch = bn.num_features
            rng = lambda t, lay, idx: torch.arange(lay.specs[idx][0], lay.specs[idx][0] + t.numel())  # noqa: E731
            g.append(rng(bn.weight, param_layout, pindex[id(bn.weight)]))
            be.append(rng(bn.bias, param_layout, pindex[id(bn.bias)]))
            mu.append(rng(bn.running_mean, buffer_layout, bindex[id(bn.running_mean)]))
            var.append(rng(bn.running_var, buffer_layout, bindex[id(bn.running_var)]))
            eps.append(torch.full((ch,), float(bn.eps)))
            wi = pindex[id(layer.weight)]
            w_off, shape, stride = param_layout.specs[wi]
            n = aligned(layer.weight.numel())  # the padding maps onto the flat vector's zero padding
            widx.append(torch.arange(w_off, w_off + n))
            channel = torch.zeros(n, dtype=torch.long)  # output channel of each element, in storage order
            channel.as_strided(shape, stride).copy_(
                torch.arange(ch).view(-1, *([1] * (len(shape) - 1))).expand(shape))
            sidx.append(channel + coff)
            if layer.bias is not None:
                cb_at.append(torch.arange(coff, coff + ch))
                cb_idx.append(rng(layer.bias, param_layout, pindex[id(layer.bias)]))
            wspecs.append((woff, shape, stride, coff, ch))
            woff, coff = woff + n, coff + ch
        to = lambda ts: torch.cat(ts).to(device)  # noqa: E731
        self.g, self.be, self.mu, self.var, self.eps = to(g), to(be), to(mu), to(var), to(eps)
        self.widx, self.sidx = to(widx), to(sidx)
        self.cb = (to(cb_at), to(cb_idx)) if cb_at else None
        self.wspecs = wspecs
        self.weights = torch.zeros(1, w_numel, device=device)  # loop mode: row 0, the current point
        self.biases = torch.zeros(1, self.nc, device=device)
        for k, (node, prev, layer, bn) in enumerate(pairs):
            w, b = self.views(self.weights, self.biases, k)
            name = f"bnfolded_{k}"
            self.net.add_submodule(name, _Folded(layer, w[0], b[0]))
            prev.target = name
            node.replace_all_uses_with(prev)
            self.net.graph.erase_node(node)
        self.net.recompile()
        self.net.delete_all_unused_submodules()  # the traced copy only: the model keeps its BatchNorms
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
