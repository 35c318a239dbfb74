"""pipeline.video: probe, frame-exact decode, paste into native planes, pixel-format choice."""

import json
from fractions import Fraction

import numpy as np
import pytest

from bad_media import audio_only
from pipeline import synth
from pipeline.errors import ReelfaceError
from pipeline.video import VideoWriter, choose_pix_fmt, decode, probe
from pipeline.config import EncodeConfig


def _frames(n, size, seed=0):
    rng = np.random.default_rng(seed)
    photo = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    photo = np.repeat(np.repeat(photo, 4, 0), 4, 1)  # blocky: survives H.264 well enough to see motion
    return synth.clean_clip(photo, n, size, seed=seed)[0]


@pytest.fixture(scope="module")
def hamilton(data_dir):
    return data_dir / "clips" / "hamilton.mp4"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("video_clips")
    vfr_pts = [0, 3000, 9000, 12000, 13500, 21000, 24000, 30000]  # 1/90000: 30, 15, 60 fps mixed
    return {
        "vfr": synth.write_clip(d / "vfr.mp4", _frames(8, (64, 48)),
                                synth.ClipSpec(time_base=Fraction(1, 90000), pts=vfr_pts)),
        "rot10": synth.write_clip(d / "rot10.mp4", _frames(6, (64, 48), 1),
                                  synth.ClipSpec(pix_fmt="yuv420p10le", rotation=90, color=(9, 14, 9, 1))),
        "odd": synth.write_clip(d / "odd.mkv", _frames(5, (67, 41), 2),
                                synth.ClipSpec(codec="ffv1", color=(6, 6, 6, 2))),
    }


def test_probe_hamilton(hamilton):
    info = probe(hamilton)
    assert (info.width, info.height, info.pix_fmt, info.bit_depth) == (640, 360, "yuv420p", 8)
    assert info.time_base == Fraction(1, 11988) and info.frame_count == 275
    assert info.pts[0] == 10214 and abs(info.start_time - 0.852) < 1e-3  # the video starts late
    assert info.pts == sorted(info.pts) and len(set(info.pts)) == 275
    assert info.keyframes[0] == 0 and len(info.keyframes) > 1
    assert not info.is_vfr and info.average_rate == Fraction(2997, 100)
    assert [s["type"] for s in info.streams] == ["video", "audio"]
    data = json.loads(json.dumps(info.to_dict()))
    assert data["colorspace"] == "bt709" and data["color_range"] == "tv" and data["time_base"] == "1/11988"


def test_decode_from_the_middle_matches_a_full_decode(hamilton):
    info = probe(hamilton)
    wanted = [info.keyframes[1] - 1, info.keyframes[1], info.keyframes[1] + 3, info.frame_count - 1]
    full = {f.index: f.rgb for f in decode(hamilton) if f.index in wanted}
    for index in wanted:
        (frame,) = list(decode(hamilton, index, index + 1))
        assert frame.index == index and frame.pts == info.pts[index]
        assert np.array_equal(frame.rgb, full[index])
    assert [f.index for f in decode(hamilton, 270)] == [270, 271, 272, 273, 274]


def test_probe_vfr_rotation_10bit_odd(clips):
    vfr = probe(clips["vfr"])
    assert vfr.is_vfr and vfr.time_base == Fraction(1, 90000)
    assert vfr.pts == [0, 3000, 9000, 12000, 13500, 21000, 24000, 30000]
    rot = probe(clips["rot10"])
    assert rot.rotation == 90 and rot.bit_depth == 10 and rot.pix_fmt == "yuv420p10le"
    assert (rot.color_primaries, rot.color_trc, rot.colorspace, rot.color_range) == (9, 14, 9, 1)
    odd = probe(clips["odd"])
    assert (odd.width, odd.height) == (67, 41) and odd.color_range == 2


@pytest.mark.parametrize("clip,dtype", [("rot10", np.uint16), ("odd", np.uint8)])
def test_paste_keeps_unmasked_samples_bit_identical(clips, clip, dtype):
    (frame,) = list(decode(clips[clip], 1, 2))
    h, w = frame.shape
    before = frame.planes()
    assert before[0].dtype == dtype
    mask = np.zeros((h, w), np.float32)
    mask[5:20, 7:30] = 1.0
    mask[20, 7:30] = 0.5  # a feathered edge
    (view,) = frame.views()
    view.paste(mask[..., None] * np.array([255.0, -255.0, -255.0], np.float32))  # towards red
    after = frame.planes()
    assert np.array_equal(after[0][mask == 0], before[0][mask == 0])
    inside = after[0][mask == 1]
    assert (inside != before[0][mask == 1]).mean() > 0.9
    # chroma: a sample changes only if its 2x2 block touches the mask
    block = np.zeros(after[1].shape, bool)
    block[5 // 2:21 // 2 + 1, 7 // 2:30 // 2 + 1] = True
    assert np.array_equal(after[1][~block], before[1][~block])
    red = view.working((10, 11, 15, 16))[0, 0]
    assert frame.pasted and red[0] > red[1] + 100 and red[0] > red[2] + 100


@pytest.mark.parametrize("clip", ["rot10", "odd"])
def test_paste_of_a_box_at_an_odd_corner_equals_the_whole_grid_change(clips, clip):
    """A change given over its box only (as blend.paste_changes gives it) writes the same samples as the
    same change over the whole grid, also where the box starts inside a chroma sample."""
    results = []
    for whole in (True, False):
        (frame,) = list(decode(clips[clip], 1, 2))
        (view,) = frame.views()
        h, w = view.geometry.shape
        part = np.zeros((17, 23, 3), np.float32)
        part[2:15, 3:20] = np.linspace(-60, 90, 13 * 17 * 3, dtype=np.float32).reshape(13, 17, 3)
        if whole:
            delta = np.zeros((h, w, 3), np.float32)
            delta[5:22, 7:30] = part
            view.paste(delta)
        else:
            view.paste(part, (5, 7))
        results.append(frame.planes())
    assert all(np.array_equal(a, b) for a, b in zip(*results, strict=True))
    with pytest.raises(ValueError):
        view.paste(part, (h - 3, 0))  # reaches past the grid


@pytest.mark.parametrize("clip", ["rot10", "odd"])
def test_paste_of_a_zero_change_writes_nothing(clips, clip):
    (frame,) = list(decode(clips[clip], 0, 1))
    before = frame.planes()
    (view,) = frame.views()
    view.paste(np.zeros((*view.geometry.shape, 3), np.float32))
    assert not frame.pasted and all(np.array_equal(a, b) for a, b in zip(frame.planes(), before, strict=True))


def test_the_changed_box_holds_every_pixel_with_a_non_zero_channel():
    """paste's box: the pixels where any of R, G, B is non-zero, also where only one channel is, at the
    edges; -0.0 is no change; an all-zero change has no box."""
    from pipeline.video import _changed_box

    rng = np.random.default_rng(2)
    for trial in range(40):
        h, w = rng.integers(1, 30, 2)
        delta = np.zeros((h, w, 3), np.float32)
        delta[rng.integers(0, h), rng.integers(0, w), rng.integers(0, 3)] = -0.0
        for _ in range(trial % 4):  # none to three single-channel changes anywhere
            delta[rng.integers(0, h), rng.integers(0, w), rng.integers(0, 3)] = rng.choice([-1e-30, 0.5, 200.0])
        ys, xs = np.nonzero((delta[..., 0] != 0) | (delta[..., 1] != 0) | (delta[..., 2] != 0))
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None
        assert _changed_box(delta) == expected
    for channel in range(3):  # only one channel of the first or the last column
        for column in (0, 4):
            delta = np.zeros((3, 5, 3), np.float32)
            delta[1, column, channel] = 1.0
            assert _changed_box(delta) == (column, 1, column + 1, 2)


def test_pix_fmt_keeps_depth_family():
    assert choose_pix_fmt("libx264", "yuv420p") == "yuv420p"
    assert choose_pix_fmt("libx264", "yuv420p10le") == "yuv420p10le"
    assert choose_pix_fmt("libx265", "yuv422p10le") == "yuv422p10le"
    assert choose_pix_fmt("prores_ks", "yuv420p") == "yuv422p10le"  # ProRes is 10-bit only
    assert choose_pix_fmt("ffv1", "yuv420p10le") == "yuv420p10le"
    assert choose_pix_fmt("libx264", "yuv411p") == "yuv420p"
    with pytest.raises(ReelfaceError, match="cannot write pixel format"):
        choose_pix_fmt("prores_ks", "yuv420p", wanted="yuv420p")


def test_writer_keeps_vfr_pts_and_10bit(clips, tmp_path):
    for clip, codec in (("vfr", "libx264"), ("rot10", "libx265")):
        info = probe(clips[clip])
        out = tmp_path / f"{clip}.mov"
        with VideoWriter(out, info, EncodeConfig(codec=codec, preset="ultrafast")) as writer:
            for frame in decode(clips[clip]):
                writer.write(frame)
        got = probe(out)
        assert got.pts == info.pts and got.time_base == info.time_base
        assert got.bit_depth == info.bit_depth


def test_missing_and_non_video_inputs(tmp_path):
    with pytest.raises(ReelfaceError, match="not found"):
        probe(tmp_path / "nope.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    with pytest.raises(ReelfaceError, match="not a video file"):
        probe(text)
    with pytest.raises(ReelfaceError, match="directory"):
        probe(tmp_path)
    # a codec FFmpeg can open but the frame list check sees no video
    audio = audio_only(tmp_path / "tone.m4a")
    with pytest.raises(ReelfaceError, match="no video stream"):
        probe(audio)
