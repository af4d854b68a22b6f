"""The adaptive limit (issue 24, part 3): the gradient alone, then through the decorator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from django_streamer import Adaptive, limit_concurrency, stream_response
from django_streamer.core.limiter import Gradient
from django_streamer.decorators import get_pool

from .conftest import ServingRequestFactory

rf = ServingRequestFactory()


def served(gradient: Gradient, capacity: int, no_load: float, rounds: int) -> list[int]:
    """A server that runs ``capacity`` requests at once; more wait their turn, so the
    time to first byte grows with the concurrency past it. Every slot is used."""
    limits = []
    for _ in range(rounds):
        concurrency = gradient.limit
        seconds = no_load * max(1.0, concurrency / capacity)
        gradient.sample(seconds, in_use=concurrency)
        limits.append(gradient.limit)
    return limits


def test_it_grows_at_the_no_load_time_and_settles_where_queueing_starts() -> None:
    gradient = Gradient(Adaptive(initial=4, max=500))
    limits = served(gradient, capacity=40, no_load=0.01, rounds=400)
    assert limits[20] > 4  # no queueing yet: grows
    assert 40 <= max(limits[-100:]) <= 90  # within tolerance x capacity
    assert min(limits[-100:]) >= 30  # and stays there


def test_one_slow_request_does_not_halve_it() -> None:
    gradient = Gradient(Adaptive(initial=50, max=200))
    for _ in range(50):
        gradient.sample(0.01, in_use=50)
    before = gradient.limit
    gradient.sample(5.0, in_use=before)
    assert gradient.limit >= before * 0.85


def test_an_unused_limit_is_not_raised() -> None:
    gradient = Gradient(Adaptive(initial=20))
    for _ in range(100):
        gradient.sample(0.01, in_use=2)
    assert gradient.limit == 20


def test_bounds_hold() -> None:
    gradient = Gradient(Adaptive(min=5, initial=6, max=8))
    for _ in range(200):
        gradient.sample(0.01, in_use=gradient.limit)
    assert gradient.limit == 8
    for _ in range(200):
        gradient.sample(10.0, in_use=gradient.limit)
    assert gradient.limit == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min": 0}, "Adaptive: min must be a positive int"),
        ({"min": 5, "initial": 2}, "min <= initial <= max"),
        ({"tolerance": 0.5}, "tolerance must be >= 1"),
        ({"smoothing": 2.0}, "smoothing must be in"),
    ],
)
def test_bad_bounds_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Adaptive(**kwargs)


def test_auto_is_refused_at_cluster_scope() -> None:
    with pytest.raises(ValueError, match="scope='process' or 'host', not 'cluster'"):
        limit_concurrency("auto", scope="cluster")


@pytest.mark.parametrize("scope", ["process", "host"])
def test_the_decorated_view_moves_its_pools_limit_with_its_time_to_first_byte(scope: str) -> None:
    delay = {"seconds": 0.0}

    def source() -> Iterator[bytes]:
        threading.Event().wait(delay["seconds"])  # the "database connection" wait
        yield b"row\n"

    name = f"adaptive-test-{scope}"

    @limit_concurrency(Adaptive(initial=4, max=50), name=name, scope=scope)
    def view(request: Any) -> Any:
        return stream_response(source())

    pool = get_pool(scope, name, 4)

    def round_of_requests() -> None:
        responses = [view(rf.get("/")) for _ in range(pool.limit)]  # every slot in use
        for response in responses:
            assert response.status_code == 200
            response.prime()  # the first chunk: a sample
        for response in responses:
            b"".join(response)
            response.close()

    for _ in range(12):
        round_of_requests()
    grown = pool.limit
    assert grown > 4
    delay["seconds"] = 0.05  # a queue forms behind the database
    for _ in range(4):
        round_of_requests()
    assert pool.limit < grown
