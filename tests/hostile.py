"""Hypothesis strategies for hostile input (no tests here): JSON-like values
as a peer on the bus or a REST client could send them, biased towards what
broke validators before (issue 13): timestamps at the edges of datetime's
range with offsets, numbers too big for a float, NaN and infinities,
integers beyond 64 bits, lists and objects where a string belongs, lone
surrogates."""
from __future__ import annotations

from hypothesis import strategies as st

EDGE_TIMES = [
    "0001-01-01T00:00:00+01:00", "0001-01-01T00:30:00+05:00", "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:00:00-14:00", "0001-01-01", "9999-12-31T23:59:59.999999Z", "1969-12-31",
    "2026-11-24T03:00:00Z", "2026-11-24T03:00:00.123456+00:00", "2026-02-30T00:00:00Z",
    "2026-11-24T03:00:00+24:00", "2026-11-24T25:00:00", "", " ", "Z", "\x00",
    "2026-11-24T03:00:00\udcff",
]
EDGE_NUMBERS = [
    float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, 2**63, 2**63 - 1,
    -(2**63) - 1, 2**64, 2**1024, -(2**1024), 10**400, 0, -1, 2**31, 2**31 - 1, True, False,
]
EDGE_TEXT = ["", " ", "\n", "\udcff", "\ud800x", "enabled", "healthy",
             "waiting", "failed", "disabled", "unhealthy", "reboot", "heartbeat_loss",
             "12345678-1234-1234-1234-123456789abc",
             "12345678-1234-1234-1234-123456789abc\n", "../etc/passwd", "instance-00000001"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(EDGE_TIMES), st.sampled_from(EDGE_NUMBERS), st.sampled_from(EDGE_TEXT),
    st.sampled_from([256, 300, 5000]).map(lambda n: "x" * n),  # past every length limit
)


def json_like(keys: list[str] | None = None, max_leaves: int = 12) -> st.SearchStrategy:
    """Nested lists/objects of hostile scalars; object keys drawn from ``keys``
    (the field names a validator looks at) or any text."""
    key = st.sampled_from(keys) if keys else st.text(max_size=10)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(key, inner, max_size=6)),
        max_leaves=max_leaves)


def record(fields: dict[str, st.SearchStrategy], extra_keys: list[str]) -> st.SearchStrategy:
    """An object with each of ``fields`` usually present (often plausible,
    sometimes hostile) and a few other keys."""
    hostile = json_like(extra_keys, 6)
    parts = {k: st.one_of(v, hostile) for k, v in fields.items()}
    return st.builds(
        lambda present, extra: {**{k: v for k, v in present.items() if v is not _ABSENT},
                                **extra},
        st.fixed_dictionaries({k: st.one_of(st.just(_ABSENT), v, v, v)
                               for k, v in parts.items()}),
        st.dictionaries(st.sampled_from(extra_keys) | st.text(max_size=8), hostile,
                        max_size=4))


_ABSENT = object()
