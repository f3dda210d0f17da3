"""The algorithm layer's shared contract (docs/METHODS.md §P.2): the optimizer step every method
uses, the declared label hooks and the one requirement check; no data is read."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from domainbed_sc.algorithms import ALGORITHMS, Algorithm
from domainbed_sc.algorithms.resolve import check_labels
from domainbed_sc.datasets.base import DatasetArgs
from domainbed_sc.errors import UserError


def sgd_with_schedule(module: nn.Module):
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, [1], 0.1)


def test_step_optimizer_clears_stale_gradients_and_steps_every_optimizer_on_one_backward():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 1), nn.Linear(3, 1)
    (opt_a, sched_a), (opt_b, sched_b) = sgd_with_schedule(a), sgd_with_schedule(b)
    x = torch.randn(4, 3)
    for p in (*a.parameters(), *b.parameters()):
        p.grad = torch.full_like(p, 100.0)  # a previous step's gradient must not leak in
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    loss = (a(x) * b(x)).sum()
    grads = torch.autograd.grad(loss, [*a.parameters(), *b.parameters()], retain_graph=True)
    Algorithm.step_optimizer(loss, (opt_a, opt_b), (sched_a, None))
    after = [p.detach() for p in (*a.parameters(), *b.parameters())]
    for p0, p1, g in zip(before, after, grads):
        assert torch.allclose(p1, p0 - 0.5 * g)
    assert opt_a.param_groups[0]["lr"] == pytest.approx(0.05)  # its scheduler stepped once
    assert opt_b.param_groups[0]["lr"] == 0.5  # None: no schedule


def test_step_optimizer_takes_one_optimizer_and_scheduler():
    net = nn.Linear(2, 1)
    opt, sched = sgd_with_schedule(net)
    Algorithm.step_optimizer(net(torch.ones(1, 2)).sum(), opt, sched)
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_label_hooks_default_to_requires_and_modes_override_them():
    erm, irm, dro = (ALGORITHMS.get(n) for n in ("ERM", "IRM", "GroupDRO"))
    assert erm.required_labels({}) == set() and erm.label_reason({}) is None
    assert irm.required_labels({}) == set(irm.requires) and irm.requires
    assert dro.required_labels({"groupdro_mode": "env"}) == {"e"}
    assert dro.label_reason({"groupdro_mode": "env"}) == "groupdro_mode=env"


def test_check_labels_names_what_needs_the_missing_label():
    dro = ALGORITHMS.get("GroupDRO")
    env_mode = {"groupdro_mode": "env"}
    with pytest.raises(UserError, match=r"^algorithm GroupDRO with groupdro_mode=env needs "
                                        r"environment labels \(e\), which dataset d does not provide$"):
        check_labels(dro, env_mode, "d", DatasetArgs(), frozenset({"g"}),
                     {"e": "algorithm GroupDRO with sampler uniform_env"})  # the algorithm's cause wins
    with pytest.raises(UserError, match=r"^algorithm ERM with sampler uniform_group needs group labels"):
        check_labels(ALGORITHMS.get("ERM"), {}, "d", DatasetArgs(), frozenset(),
                     {"g": "algorithm ERM with sampler uniform_group"})
    check_labels(dro, env_mode, "d", DatasetArgs(), frozenset({"e"}))  # provided: no error
