"""Check that ``update`` steps on an independently written reference loss (issue 11, item 10).

``check_update`` copies the algorithm, runs one ``update``, records the tensor that
``.backward()`` was called on and the gradients it left, and compares them with ``reference``:
a function of the copy (the parameters before the step) that returns the loss's weighted terms,
written in the test from the paper's formula.  It checks
  * the stepped loss's value and its gradient on every stepped parameter;
  * that every term matters: dropping any one changes that gradient beyond the tolerance, so a
    dropped term, a flipped sign or a term computed on the wrong tensor cannot pass;
  * the step itself, with the gradient g just checked against ∇L_ref: plain SGD (momentum 0,
    weight decay 0) moves θ to θ − lr·g, a first Adam step to θ − lr·g/(|g| + eps);
    parameters outside ``stepped`` do not move.
Everything runs in float64, so the tolerances are far below any term's contribution.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import Tensor, autograd

from domainbed_sc.algorithms import ALGORITHMS, TaskInfo
from domainbed_sc.datasets.base import Batch
from domainbed_sc.hparams import draw

TOL = {"rtol": 1e-6, "atol": 1e-9}
SGD = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "lr": 0.1}


def make(name: str, task: TaskInfo, seed: int = 0, **overrides):
    """The algorithm with default hparams except ``overrides``, in float64."""
    cls = ALGORITHMS.get(name)
    hparams = draw(cls.space(), 0, True, {"arch": "mlp"}, overrides)
    torch.manual_seed(seed)
    return cls(task, hparams).double()


def make_batch(x: Tensor, y, s=None, e=None, num_attributes: int = 2) -> Batch:
    y = torch.as_tensor(y)
    s = torch.full_like(y, -1) if s is None else torch.as_tensor(s)
    e = torch.full_like(y, -1) if e is None else torch.as_tensor(e)
    g = torch.where(s >= 0, y * num_attributes + s, -1)
    return Batch(x.double(), y, s, g, e, torch.arange(len(y)))


def ce(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy −log softmax(logits)_y, written out."""
    return (logits.exp().sum(1).log() - logits.gather(1, y[:, None])[:, 0])


@dataclass
class Backward:
    loss: Tensor
    grads: dict[str, Tensor]


def record_update(alg, batches: list[Batch]) -> list[Backward]:
    """Run ``alg.update`` once; every ``.backward()`` call with the gradients it left."""
    calls: list[Backward] = []
    original = torch.Tensor.backward

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(Backward(self.detach().clone(), {n: p.grad.clone() for n, p in
                                                      alg.named_parameters() if p.grad is not None}))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "backward", recording)
        alg.update(batches)
    return calls


def holder(alg, param: Tensor) -> torch.optim.Optimizer:
    for opt in vars(alg).values():
        if isinstance(opt, torch.optim.Optimizer):
            for group in opt.param_groups:
                if any(p is param for p in group["params"]):
                    return opt
    raise AssertionError("a parameter the loss must train is held by no optimizer")


def expected_step(opt: torch.optim.Optimizer, param: Tensor, p: Tensor, g: Tensor) -> Tensor:
    """``param`` after one step of ``opt`` from θ = p with gradient g (its first, for Adam)."""
    group = opt.param_groups[0]
    assert group["weight_decay"] == 0
    if not bool(g.any()):  # no gradient (Adam keeps no state for it): no move
        return p
    if isinstance(opt, torch.optim.SGD):
        assert group["momentum"] == 0, "the step check needs plain SGD"
        return p - group["lr"] * g
    assert isinstance(opt, torch.optim.Adam) and int(opt.state[param]["step"]) == 1
    return p - group["lr"] * g / (g.abs() + group["eps"])


def flat(grads) -> Tensor:
    return torch.cat([g.flatten() for g in grads])


def check_update(alg, batches: list[Batch], reference: Callable[[object], dict[str, Tensor]],
                 stepped: tuple[str, ...] = ("",)) -> None:
    """``reference(before)`` returns the weighted terms whose sum ``update`` must step on;
    ``stepped`` are the name prefixes of the parameters this update trains."""
    before = copy.deepcopy(alg)
    calls = record_update(alg, batches)
    assert len(calls) == 1, f"update called backward {len(calls)} times"
    (call,) = calls
    terms = reference(before)
    params = dict(before.named_parameters())
    names = [n for n in params if n.startswith(stepped)]
    wrt = [params[n] for n in names]

    def grads_of(t: Tensor) -> list[Tensor]:
        gs = autograd.grad(t, wrt, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, wrt)]

    total = sum(terms.values())
    ref = grads_of(total)
    torch.testing.assert_close(call.loss, total.detach(), **TOL, msg="the stepped loss's value")
    for n, g in zip(names, ref):
        got = call.grads.get(n, torch.zeros_like(g))
        torch.testing.assert_close(got, g, **TOL, msg=lambda m: f"gradient of {n}: {m}")
    for term, value in terms.items():
        without = flat(ref) - flat(grads_of(value))
        assert not torch.allclose(without, flat(ref), **TOL), f"term {term} does not matter here"
    after = dict(alg.named_parameters())
    for n, p in params.items():
        if n in names:
            grad = call.grads.get(n, torch.zeros_like(p))
            want = expected_step(holder(alg, after[n]), after[n], p.detach(), grad)
        else:
            want = p.detach()
        torch.testing.assert_close(after[n].detach(), want, **TOL, msg=lambda m: f"step of {n}: {m}")
