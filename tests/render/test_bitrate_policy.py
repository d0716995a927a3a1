"""The stream's bitrate policy: a start from the size, lowered on congestion only, raised slowly, rarely changed."""

from __future__ import annotations

from renderhub.render.bitrate_policy import (
    LOWER_AFTER,
    MAX_BITRATE,
    MIN_BITRATE,
    RAISE_AFTER,
    BitratePolicy,
    start_bitrate,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sending(policy: BitratePolicy, clock: Clock, bitrate: int, seconds: float, fps: int = 30) -> None:
    """The encoder puts out `bitrate` for `seconds`, one frame each 1/fps."""
    for _ in range(round(seconds * fps)):
        clock.now += 1 / fps
        policy.frame_encoded(bitrate // 8 // fps)


def test_a_stream_starts_from_its_size_within_the_limits() -> None:
    assert start_bitrate(1280, 720) == 1_382_400
    assert start_bitrate(1920, 1080) == 3_110_400
    assert start_bitrate(64, 64) == MIN_BITRATE
    assert start_bitrate(7680, 4320) == MAX_BITRATE


def test_a_low_estimate_after_a_still_camera_is_not_congestion() -> None:
    clock = Clock()
    policy = BitratePolicy(2_000_000, clock)
    sending(policy, clock, 1_500_000, 2)
    clock.now += 3  # the camera stood still: nothing sent, and the browser's estimate fell with what it received
    policy.estimate(40_000)
    assert policy.target == 2_000_000


def test_an_estimate_under_what_is_sent_lowers_the_target_and_then_waits() -> None:
    clock = Clock()
    policy = BitratePolicy(2_000_000, clock)
    sending(policy, clock, 2_000_000, 2)
    policy.estimate(2_600_000)  # room above what is sent: no change
    policy.estimate(1_900_000)  # under the target, not under 70% of what is sent: noise
    assert policy.target == 2_000_000
    policy.estimate(1_000_000)
    assert policy.target == 1_000_000
    sending(policy, clock, 2_000_000, LOWER_AFTER / 2)
    policy.estimate(600_000)  # a second drop this soon waits: the encoder has just been reopened
    assert policy.target == 1_000_000
    sending(policy, clock, 1_000_000, LOWER_AFTER + 0.1)
    policy.estimate(100_000)
    assert policy.target == MIN_BITRATE


def test_room_is_no_reason_to_raise_a_cap_the_picture_does_not_reach() -> None:
    clock = Clock()
    policy = BitratePolicy(2_000_000, clock)
    for _ in range(5):  # easy content: constant quality needs 1.2 of the 2 Mbit/s allowed
        sending(policy, clock, 1_200_000, RAISE_AFTER)
        policy.estimate(6_000_000)
    assert policy.target == 2_000_000


def test_room_raises_the_target_only_once_it_held() -> None:
    clock = Clock()
    policy = BitratePolicy(1_000_000, clock)
    for estimate in (1_400_000, 1_500_000, 1_100_000, 1_500_000):  # room, then not, then again: the clock restarts
        sending(policy, clock, 1_000_000, RAISE_AFTER / 2)
        policy.estimate(estimate)
        assert policy.target == 1_000_000
    sending(policy, clock, 1_000_000, RAISE_AFTER + 0.1)
    policy.estimate(1_500_000)
    assert policy.target == 1_300_000
    for _ in range(30):
        sending(policy, clock, 8_000_000, RAISE_AFTER)
        policy.estimate(50_000_000)
    assert policy.target == MAX_BITRATE
