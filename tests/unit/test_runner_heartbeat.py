"""The deadline of one Lease renewal (runner.kube.renewal_timeout): a silent API server must end in a
failed renewal soon enough that entries stop within about one and a half grace periods."""

import pytest

from tradewarden.runner.kube import renewal_timeout


@pytest.mark.parametrize(("grace", "expected"), [(0.5, 1.0), (2, 1.0), (5, 2.5), (15, 7.5), (20, 10.0), (600, 10.0)])
def test_half_the_grace_within_one_and_ten_seconds(grace: float, expected: float) -> None:
    assert renewal_timeout(grace) == expected
