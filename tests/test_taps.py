"""The analysis taps: what :func:`fine_yolo.analysis.taps.record` returns is what the blocks saw and made."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fine_yolo.analysis.taps import fine_modules, record
from fine_yolo.nn.fine import FINE


class _Net(nn.Module):
    """Two FINE blocks (one called ultralytics' way, with a list), then a layer that must not run when stopping."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.a, self.b, self.unused = FINE(16, 32, zero_init=False), FINE(16, 32, k=2, zero_init=False), FINE(16, 16)
        self.tail = nn.Conv2d(16, 4, 1)
        self.tail_calls = 0

    def forward(self, x):
        low = self.stem(x)
        high = self.down(low)
        y = self.b([self.a(low, high), high])
        self.tail_calls += 1
        return self.tail(y)


def test_record_returns_each_blocks_own_inputs_output_and_gain():
    net = _Net()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        low = net.stem(x)
        high = net.down(low)
        out_a = net.a(low, high)
        out_b = net.b(out_a, high)
    seen = record(net, x, gain=True)
    assert [s.block if s else None for s in seen] == [net.a, net.b, None] == \
        [*fine_modules(net)[:2], None]  # the unused block did not run
    a, b = seen[0], seen[1]
    assert torch.equal(a.low, low) and torch.equal(a.high, high) and torch.equal(a.out, out_a)
    assert torch.equal(b.low, out_a) and torch.equal(b.out, out_b)  # the list call's inputs too
    assert a.gain.shape == (2, 16, 8, 8) and b.gain.shape == (2, 16, 4, 4)  # token grids: r*k = 2 and 4
    assert torch.equal(b.gain, net.b._gain(out_a, high))
    assert net.tail_calls == 1  # the unused block never ran, so the pass was not stopped early
    assert not any(m._forward_hooks for m in net.modules())  # every hook removed
    assert not a.out.requires_grad  # no_grad by default


def test_record_stops_after_the_last_block_and_keeps_the_graph_when_asked():
    net = _Net()
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    seen = record(net, x, blocks=[net.a, net.b], grad=True)
    assert net.tail_calls == 0  # stopped once both blocks had run
    seen[1].out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    record(net, x, blocks=[net.a], stop=False)
    assert net.tail_calls == 1 and not any(m._forward_hooks for m in net.modules())


def test_hooks_are_removed_when_the_model_raises():
    net = _Net()
    with pytest.raises(RuntimeError):
        record(net, torch.rand(1, 5, 16, 16), gain=True)  # wrong channel count: the stem raises
    assert not any(m._forward_hooks for m in net.modules())
