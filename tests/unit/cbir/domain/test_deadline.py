from cbir.domain.deadline import Deadline


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_call_gets_what_is_left_of_the_bound() -> None:
    clock = Clock()
    deadline = Deadline(5.0, clock)
    assert deadline.remaining() == 5.0
    clock.now += 3.5
    assert deadline.remaining() == 1.5 and not deadline.expired


def test_past_the_bound_nothing_is_left() -> None:
    clock = Clock()
    deadline = Deadline(2.0, clock)
    clock.now += 7.0
    assert deadline.remaining() == 0.0 and deadline.expired
