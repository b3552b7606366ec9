"""Training cost as a count, not a clock: network passes per sample.

Wall time depends on the machine and on whether a run was resumed; the number of forward passes
(and of those kept for a backward pass) each step makes is a property of the method, exact and
identical on every rerun. A method adds ``PassCounter.take()`` to each step's row, the rows are
checkpointed with the run, and a stage sums them into its metrics (``total_cost``).
"""
from __future__ import annotations

import torch


class PassCounter:
    """Counts the samples that go through ``modules``' forward (``forward``), and through a forward
    whose output keeps a graph for a backward pass (``backward``)."""

    def __init__(self, *modules: torch.nn.Module | None):
        self.forward = self.backward = 0
        self._hooks = [m.register_forward_hook(self._count) for m in modules if m is not None]

    def _count(self, module, args, output) -> None:
        n = int(args[0].shape[0]) if args and isinstance(args[0], torch.Tensor) else 1
        self.forward += n
        if isinstance(output, torch.Tensor) and output.requires_grad:
            self.backward += n

    def reset(self) -> None:
        """Zero the counts (at a step's start: passes made between steps, e.g. a validation, are not the step's)."""
        self.forward = self.backward = 0

    def take(self) -> dict[str, int]:
        """The counts since the last reset or take (a step's), then zero."""
        out = {"forward_samples": self.forward, "backward_samples": self.backward}
        self.reset()
        return out


def total_cost(rows: list[tuple[int, dict]]) -> dict[str, int]:
    """The run's totals from its step rows, and forward-equivalents (a backward pass costs about
    two forward passes)."""
    fwd = sum(int(r.get("forward_samples", 0)) for _, r in rows)
    bwd = sum(int(r.get("backward_samples", 0)) for _, r in rows)
    return {"forward_samples": fwd, "backward_samples": bwd, "forward_equivalents": fwd + 2 * bwd}
