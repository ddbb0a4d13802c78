from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.render import SCENARIOS, Render


@pytest.fixture(scope="session")
def rendered() -> Callable[[str], Render]:
    """``rendered(name)``: the render of a named scenario, made once per session."""
    cache: dict[str, Render] = {}

    def get(name: str) -> Render:
        if name not in cache:
            cache[name] = Render.of(name, SCENARIOS[name])
        return cache[name]

    return get
