"""The per-session sample ring keeps the newest `size` samples, oldest first."""
from __future__ import annotations

import pytest

from nfvha.compute.samples import Samples


def test_ring_keeps_newest_in_order() -> None:
    r = Samples(3)
    assert list(r) == [] and len(r) == 0
    r.append(1.0)
    r.append(2.0)
    assert list(r) == [1.0, 2.0] and len(r) == 2
    for x in (3.0, 4.0, 5.0):
        r.append(x)
    assert list(r) == [3.0, 4.0, 5.0] and len(r) == 3
    r.clear()
    assert list(r) == [] and len(r) == 0
    r.append(6.0)
    assert list(r) == [6.0]


def test_ring_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Samples(0)
