"""The inspector's stream figures over a sliding window."""

from __future__ import annotations

from renderhub.render.bitrate import BitrateMeter
from renderhub.render.stream_stats import StreamStats


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_frame_rate_times_and_pose_to_send_latency() -> None:
    ticks = Ticks()
    stats = StreamStats(window=2.0, monotonic=ticks)
    assert stats.figures()["fps"] == 0 and stats.figures()["poseToSendMsP50"] is None
    for pose_id in range(100):  # a frame every 40 ms (25 fps), each leaving 40 ms after its pose arrived
        stats.pose_received(pose_id)
        ticks.now += 0.040
        stats.frame_sent(pose_id, render_ms=15.0, send_ms=12.0)
    figures = stats.figures()
    assert 24.5 <= figures["fps"] <= 25.5
    assert (figures["renderMsP50"], figures["encodeMsP50"]) == (15.0, 12.0)
    assert figures["poseToSendMsP50"] == 40.0 and figures["poseToSendMsP95"] == 40.0
    ticks.now += 5  # an idle stream: nothing recent
    assert stats.figures()["fps"] == 0


def test_coalesced_poses_are_forgotten() -> None:
    stats = StreamStats()
    for pose_id in range(5000):
        stats.pose_received(pose_id)
    stats.frame_sent(4999, 10.0, 10.0)  # the worker skipped to the latest pose
    assert stats._arrived == {}


def test_bitrate_over_the_window_from_a_running_byte_count() -> None:
    ticks = Ticks()
    meter = BitrateMeter(window=2.0, monotonic=ticks)
    assert meter.kbps() is None
    meter.sample(0)
    assert meter.kbps() is None  # one sample spans no time
    for _ in range(20):  # 25 kB every half second: 400 kbit/s
        ticks.now += 0.5
        meter.sample(meter._samples[-1][1] + 25_000)
    assert meter.kbps() == 400.0
    assert len(meter._samples) <= 6  # the window's samples and one before it, no more
    for _ in range(4):  # the camera stops: nothing sent for two seconds
        ticks.now += 0.5
        meter.sample(meter._samples[-1][1])
    assert meter.kbps() == 0.0
