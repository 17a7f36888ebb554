"""The benchmark peers train to the same parameters as an independent float64 reference.

``benchmarks.compare`` gives no ratio to a peer whose parameters disagree with the NumPy
reference after an epoch, so a broken peer would not report a wrong speed; this test
catches it before a benchmark run does (tiny networks, both dtypes, a short last batch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# benchmarks/ is a folder of the checkout, not part of the package: importable from the
# repository root, which `python -m pytest` puts on sys.path and a bare `pytest` does not
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
agreement = pytest.importorskip("benchmarks.peers.agreement")


def test_numpy_peers_agree():
    report = agreement.check_agreement(["numpy_minibatch", "nielsen"], verbose=False)
    assert len(report) == 2 * 2 * len(agreement.CASES)


@pytest.mark.parametrize("name", ["torch_cpu", "torch_autograd"])
def test_torch_peers_agree(name):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:  # the peers set torch's thread count for their timings; the tests after keep theirs
        report = agreement.check_agreement([name], verbose=False)
    finally:
        torch.set_num_threads(threads)
    assert len(report) == 2 * len(agreement.CASES)  # both dtypes, every case


def test_a_wrong_peer_is_caught(monkeypatch):
    """The check can fail: a peer whose learning rate is off by 1 % is reported."""
    from benchmarks.peers import numpy_minibatch

    train = numpy_minibatch.Peer.train_epoch

    def off(self, X, Y, batch_size, eta):
        return train(self, X, Y, batch_size, eta * 1.01)

    monkeypatch.setattr(numpy_minibatch.Peer, "train_epoch", off)
    with pytest.raises(AssertionError, match="peers disagree"):
        agreement.check_agreement(["numpy_minibatch"], verbose=False)
