"""MeanFlow (genbuild.train.methods.mean_flow) on a flow whose mean velocity is known exactly.

The teacher's flow is linear, dz/dt = a z, so z_r = z_t exp(a (r - t)) and the mean velocity over
[r, t] is z_t (1 - exp(-a (t - r))) / (t - r). A student u(z, t, d) = z * g(t, d) can represent it;
trained by MeanFlow it must jump from t = 1 to 0 in one call far better than the teacher's own
Euler step (which lands on z (1 - a)).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch

from genbuild.train.cost import total_cost
from genbuild.train.flow import sample
from genbuild.train.methods.mean_flow import MeanFlow, MeanFlowConfig, total_derivative

A = 1.5


@dataclass
class Plain:
    """The least Conditioning: no conditions at all."""

    n: int = 0

    def null(self):
        return self

    def to(self, device):
        return self

    def select(self, idx):
        return self

    def drop(self, keep):
        return self

    def denoise(self, model, x, t, interval=None):
        return model(x, t / 1000.0, None if interval is None else interval / 1000.0)


class LinearTeacher(torch.nn.Module):
    def forward(self, z, t, interval=None):
        return A * z


class ScaledStudent(torch.nn.Module):
    """u(z, t, d) = z * g(t, d), g an MLP starting near the teacher (g = A)."""

    average_velocity = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.g = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))
        torch.nn.init.zeros_(self.g[-1].weight)
        torch.nn.init.constant_(self.g[-1].bias, A)

    def forward(self, z, t, interval=None):
        d = torch.zeros_like(t) if interval is None else interval
        return z * self.g(torch.stack([t, d], -1)).view(-1, *([1] * (z.ndim - 1)))


def exact_jump(z, t: float, r: float):
    return z * math.exp(A * (r - t))


def _method(**over) -> MeanFlow:
    cfg = MeanFlowConfig(**{"steps": 1, "iterations": 300, "lr": 3e-3, "cfg_scale": 1.0, "shift": 1.0,
                            "batch_size": 16, "seed": 0, **over})
    return MeanFlow(ScaledStudent(), LinearTeacher(), cfg)


def _batches(seed=1):
    g = torch.Generator().manual_seed(seed)
    return lambda: (torch.randn(16, 4, generator=g), Plain())


def test_total_derivative_matches_forward_mode_autodiff():
    model = ScaledStudent()
    with torch.no_grad():
        model.g[-1].weight.normal_()
    z, t, r = torch.randn(3, 4), torch.tensor([0.9, 0.5, 0.2]), torch.tensor([0.1, 0.5, 0.0])
    v = torch.randn(3, 4)
    fd = total_derivative(model, z, r, t, v, Plain(), 1e-3)
    _, exact = torch.func.jvp(lambda zz, tt: model(zz, tt, tt - r), (z, t), (v, torch.ones(3)))
    assert torch.allclose(fd, exact, rtol=1e-3, atol=1e-4), (fd - exact).abs().max()


def test_meanflow_learns_the_one_step_jump_that_euler_misses():
    method = _method()
    z = torch.randn(64, 4)
    before = (sample(method.generator, Plain(), z, 1, 1.0) - exact_jump(z, 1.0, 0.0)).pow(2).mean()
    nxt = _batches()
    rows = [method.train_step(i, nxt) for i in range(300)]
    after = (sample(method.ema, Plain(), z, 1, 1.0) - exact_jump(z, 1.0, 0.0)).pow(2).mean()
    assert after < 0.05 * before, (float(before), float(after))
    # two steps of the same weights also land on the exact flow: any step count from one model
    two = (sample(method.ema, Plain(), z, 2, 1.0) - exact_jump(z, 1.0, 0.0)).pow(2).mean()
    assert two < 0.05 * before
    cost = total_cost(list(enumerate(rows)))
    # per sample and step: teacher 1 + finite difference 2 + the student's own pass (kept for backward)
    assert cost == {"forward_samples": 300 * 16 * 4, "backward_samples": 300 * 16, "forward_equivalents": 300 * 16 * 6}


def test_plain_flow_matching_share_only_keeps_the_teacher():
    """flow_ratio = 1: r = t always, so the student only learns the instantaneous velocity (the
    teacher's); its one-step jump stays Euler's."""
    method = _method(flow_ratio=1.0, iterations=50)
    nxt = _batches()
    for i in range(50):
        method.train_step(i, nxt)
    z = torch.randn(8, 4)
    assert torch.allclose(sample(method.ema, Plain(), z, 1, 1.0), z * (1 - A), atol=0.05)


def test_state_dict_resumes_exactly():
    a, b = _method(), _method()
    nxt_a = _batches()
    for i in range(3):
        a.train_step(i, nxt_a)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as from disk: no tensor shared with a
    g = torch.Generator().manual_seed(5)
    data = [torch.randn(16, 4, generator=g) for _ in range(2)]
    rows_a = [a.train_step(3 + i, lambda d=d: (d, Plain())) for i, d in enumerate(data)]
    rows_b = [b.train_step(3 + i, lambda d=d: (d, Plain())) for i, d in enumerate(data)]
    assert rows_a == rows_b
    for (ka, va), (kb, vb) in zip(a.ema.state_dict().items(), b.ema.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("over, key", [({"flow_ratio": 1.5}, "flow_ratio"), ({"fd_eps": 0.5}, "fd_eps")])
def test_bad_config_names_the_key(over, key):
    with pytest.raises(ValueError, match=key):
        MeanFlowConfig(steps=1, iterations=1, lr=1e-3, cfg_scale=1.0, shift=1.0, param_prefix="x.", **over)


def test_needs_an_interval_input():
    with pytest.raises(ValueError, match="average_velocity"):
        MeanFlow(torch.nn.Linear(2, 2), LinearTeacher(), MeanFlowConfig(steps=1, iterations=1, lr=1e-3, cfg_scale=1.0,
                                                                        shift=1.0))


def test_a_term_on_the_one_jump_x0_changes_the_update():
    """A pipeline term (here: pull x0 towards zero) joins MeanFlow's loss with its weight; weight 0 is off."""
    from genbuild.train.methods.student import GeneratorTerm

    def pull(x0_gen, x0_true, cond):
        return (x0_gen ** 2).mean()

    runs = {}
    for w in (0.0, 1.0):
        m = MeanFlow(ScaledStudent(), LinearTeacher(), MeanFlowConfig(steps=1, iterations=1, lr=1e-2, cfg_scale=1.0,
                                                                        shift=1.0, batch_size=16),
                     terms={"pull": GeneratorTerm(w, pull)})
        row = m.train_step(0, _batches())
        runs[w] = (row, [p.detach().clone() for p in m.generator.parameters()])
    assert "pull" not in runs[0.0][0] and runs[1.0][0]["pull"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(runs[0.0][1], runs[1.0][1]))
