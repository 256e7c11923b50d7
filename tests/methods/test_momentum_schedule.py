import math

from solo.methods.momentum import cosine_tau


def test_cosine_tau_endpoints_and_midpoint() -> None:
    assert cosine_tau(0, 100, 0.99, 1.0) == 0.99
    assert math.isclose(cosine_tau(50, 100, 0.99, 1.0), 0.995)
    assert cosine_tau(100, 100, 0.99, 1.0) == 1.0
    assert cosine_tau(150, 100, 0.99, 0.999) == 0.999  # clamped past the end
    values = [cosine_tau(s, 10, 0.99, 0.999) for s in range(11)]
    assert values == sorted(values)
