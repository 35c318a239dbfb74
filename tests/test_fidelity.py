"""Archive-grade fidelity: the face path at the source's precision, HDR, anamorphic, interlaced and
rotated footage, each on a generated clip, through the whole `restore` where a user would see it."""

import json
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from pipeline import align, synth
from pipeline.config import load_config
from pipeline.errors import ReelfaceError
from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip
from pipeline.picture import colour_for
from pipeline.process import restore_frames, track_transforms
from pipeline.restorers.identity import IdentityRestorer
from pipeline.run import restore
from pipeline.video import decode, probe

N_FRAMES = 8
SIZE = 160


class Brighten:
    """Adds a fixed amount (0..255 scale) to every crop: a change anyone can find in the output."""

    name = "brighten"
    temporal_radius = 0

    def __init__(self, amount: float):
        self.amount = amount
        self.seen: list[torch.Tensor] = []

    def restore(self, crops, refs=None):
        self.seen.append(crops.clone())
        return crops + self.amount / 255.0


class VerticalBlur:
    """A stand-in for restorers that smooth what they take for noise: a vertical box blur in the crop."""

    name = "vblur"
    temporal_radius = 0

    def restore(self, crops, refs=None):
        return torch.nn.functional.avg_pool2d(crops, (33, 1), stride=1, padding=(16, 0), count_include_pad=False)


@pytest.fixture(scope="module")
def face(data_dir):
    """Field-rate pictures of a real face on a smooth path and its exact landmarks."""
    return make_ground_truth_clip(data_dir / "refs" / "biden" / "biden2.jpg", n_frames=2 * N_FRAMES, size=SIZE)


def _cfg(*overrides):
    return load_config("default", ["encode.codec=ffv1", "blend.temporal=0", "blend.color_match=false",
                                   "run.report=true", *overrides])


def _run(src, out, restorer, *overrides):
    restore(src, out, _cfg(*overrides), make_restorer=lambda: restorer)
    return json.loads(out.with_name(out.name + ".report.json").read_text())


def _same_video(a, b):
    """Every plane of every frame identical; frame count and pts identical."""
    assert probe(a).pts == probe(b).pts
    for x, y in zip(decode(a), decode(b), strict=True):
        assert all(np.array_equal(p, q) for p, q in zip(x.planes(), y.planes(), strict=True)), x.index


@pytest.mark.parametrize("pix_fmt,color", [("yuv420p", (1, 1, 1, 1)), ("yuv420p10le", (9, 14, 9, 1)),
                                           ("yuv420p10le", (9, 16, 9, 1))], ids=["8bit", "10bit", "pq"])
def test_strength_zero_is_bit_exact(face, tmp_path, pix_fmt, color):
    """Acceptance: --strength 0 with a lossless encoder gives every plane of every frame back, at 8 and
    10 bit and on PQ, although faces were found and went through the face path."""
    src = synth.write_clip(tmp_path / "in.mkv", face.clean[:N_FRAMES],
                           synth.ClipSpec(codec="ffv1", pix_fmt=pix_fmt, color=color))
    report = _run(src, tmp_path / "out.mkv", Brighten(40.0), "blend.strength=0")
    assert sum(t["frames_touched"] for t in report["tracks"]) >= N_FRAMES - 2
    _same_video(src, tmp_path / "out.mkv")
    got = probe(tmp_path / "out.mkv")
    assert (got.color_primaries, got.color_trc, got.colorspace, got.color_range) == color


@pytest.fixture(scope="module")
def ten_bit(face, tmp_path_factory):
    src = synth.write_clip(tmp_path_factory.mktemp("tenbit") / "in.mkv", face.clean[:4],
                           synth.ClipSpec(codec="ffv1", pix_fmt="yuv420p10le", color=(9, 14, 9, 1)))
    return src, ground_truth_trackset(face.landmarks[:4])


def _face_core(transform, shape):
    return align.paste_mask(transform, shape, 0.1) > 0.99


def test_ten_bit_round_trip_of_the_identity_restorer(ten_bit):
    """Acceptance: identity restorer forced through the face path on a 10-bit source: face samples
    within 1 level at >= 99 %."""
    src, trackset = ten_bit
    before = [f.planes()[0] for f in decode(src)]
    frames = list(decode(src))
    restore_frames(frames, trackset, None, IdentityRestorer(), _cfg())
    transforms = track_transforms(trackset.tracks[0])
    for k, frame in enumerate(frames):
        core = _face_core(transforms[k], frame.shape)
        diff = np.abs(frame.planes()[0].astype(int) - before[k])[core]
        assert core.sum() > 1000 and (diff <= 1).mean() >= 0.99


def test_ten_bit_keeps_a_change_smaller_than_one_8bit_level(ten_bit):
    """A restorer change of 0.75 of an 8-bit level is 2.58 10-bit luma levels: every face sample moves by
    it rounded, 3 (a face path through 8-bit RGB adds up to +-1.7 levels of quantisation error)."""
    src, trackset = ten_bit
    before = [f.planes()[0] for f in decode(src)]
    frames = list(decode(src))
    restore_frames(frames, trackset, None, Brighten(0.75), _cfg())
    expected = 0.75 / 255 * 876  # limited range: 876 luma levels from black to white at 10 bit
    transforms = track_transforms(trackset.tracks[0])
    for k, frame in enumerate(frames):
        core = _face_core(transforms[k], frame.shape)
        diff = (frame.planes()[0].astype(int) - before[k])[core]
        assert (np.abs(diff - expected) <= 0.5).mean() >= 0.99


def test_pq_working_space_anchors_and_exact_inverse():
    """PQ 58 % (203 nits, BT.2408 reference white) is white in the working space, 100 nits is mid-grey
    by the 2.4 gamma, and every 10-bit code converts back to itself."""
    import av

    colour = colour_for(av.VideoFormat("gbrp10le", 4, 4), 10, 0, 2, 16, 1)  # full-range RGB, PQ, BT.709 primaries
    codes = np.arange(1024, dtype=np.uint16)
    planes = [np.tile(codes, (3, 1)) for _ in range(3)]
    working = colour.to_working(planes, [(1, 1)] * 3)[0, :, 0]
    assert abs(working[round(0.5807 * 1023)] - 255) < 1.5
    assert abs(working[round(0.5081 * 1023)] - 255 * (100 / 203) ** (1 / 2.4)) < 1.5
    # a change that is undone gives every code back (except where the first one clipped at black)
    for delta in (np.float32(3.0), np.float32(-3.0)):
        changed = [p.copy() for p in planes]
        colour.add_change(changed, [(1, 1)] * 3, np.full((3, 1024, 3), delta, np.float32))
        colour.add_change(changed, [(1, 1)] * 3, np.full((3, 1024, 3), -delta, np.float32))
        moved = np.abs(changed[0].astype(int) - planes[0])[0][working > 4]
        assert (moved <= 1).all() and (moved == 0).mean() > 0.9


def test_hdr_refused_when_asked_with_the_option_named(face, tmp_path):
    src = synth.write_clip(tmp_path / "pq.mkv", face.clean[:2],
                           synth.ClipSpec(codec="ffv1", pix_fmt="yuv420p10le", color=(9, 16, 9, 1)))
    with pytest.raises(ReelfaceError, match="restore.hdr=convert"):
        restore(src, tmp_path / "out.mkv", _cfg("restore.hdr=refuse"), make_restorer=lambda: Brighten(1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pq.mkv"]


def test_pq_faces_reach_the_restorer_in_sdr_and_the_change_comes_back(face, tmp_path):
    """A PQ clip whose face sits at SDR levels once converted: the restorer sees it there (not the dim PQ
    code values), and its change is in the output as that change in the working space, tags kept."""
    sdr = np.stack(face.clean[:N_FRAMES]).astype(np.float64) / 255
    nits = 203 * sdr ** 2.4  # the face as light, reference white at 203 nits (BT.709 primaries)
    y = (nits / 10000) ** 0.1593017578125
    pq = ((0.8359375 + 18.8515625 * y) / (1 + 18.6875 * y)) ** 78.84375  # SMPTE ST 2084
    src = synth.write_clip(tmp_path / "pq.mkv", list(np.rint(pq * 255).astype(np.uint8)),
                           synth.ClipSpec(codec="ffv1", pix_fmt="yuv444p10le", color=(1, 16, 1, 2)))
    restorer = Brighten(12.0)
    report = _run(src, tmp_path / "out.mkv", restorer)
    assert report["picture"]["hdr"].startswith("PQ")
    seen = torch.cat(restorer.seen)
    assert 0.25 < float(seen.mean()) < 0.75  # SDR levels, where PQ codes of the same face are ~0.1..0.5
    got = probe(tmp_path / "out.mkv")
    assert got.color_trc == 16 and got.pts == probe(src).pts
    transforms = track_transforms(ground_truth_trackset(face.landmarks[:N_FRAMES]).tracks[0])
    for k, (a, b) in enumerate(zip(decode(src), decode(tmp_path / "out.mkv"))):
        core = _face_core(transforms[k], a.shape)
        va, vb = a.views()[0], b.views()[0]
        change = (vb.working((0, SIZE, 0, SIZE)) - va.working((0, SIZE, 0, SIZE)))[core].mean(-1)
        assert abs(np.median(change) - 12.0) < 1.0


def test_anamorphic_faces_are_aligned_round(face, tmp_path):
    """DV-style 16:9 anamorphic (SAR 32/27): the face is stored squeezed; the restorer must see it as in a
    square-pixel clip of the same face (round), and the change must go back onto the stored face."""
    sar = Fraction(32, 27)
    stored_w = int(round(SIZE / sar))
    # one column of padding: x264 needs an even width (the display width becomes 161, 0.1 % off)
    squeezed = [np.pad(cv2.resize(f, (stored_w, SIZE), interpolation=cv2.INTER_AREA), ((0, 0), (0, 1), (0, 0)),
                       mode="edge") for f in face.clean[:N_FRAMES]]
    lossless = {"qp": "0", "preset": "ultrafast"}
    src = synth.write_clip(tmp_path / "dv.mkv", squeezed, synth.ClipSpec(sar=sar, options=lossless))
    square = synth.write_clip(tmp_path / "square.mkv", face.clean[:N_FRAMES], synth.ClipSpec(options=lossless))
    trackset = ground_truth_trackset(face.landmarks[:N_FRAMES])  # display space: square pixels
    crops = {}
    for name, path in (("dv", src), ("square", square)):
        restorer = Brighten(20.0)
        frames = list(decode(path))
        restore_frames(frames, trackset, None, restorer, _cfg())
        crops[name] = torch.cat(restorer.seen).numpy()
        if name == "dv":
            # 20 working levels are ~17 luma levels: more than half of that is where the mask is > 0.5
            changed = np.abs(frames[0].planes()[0].astype(int) - list(decode(src))[0].planes()[0]) > 8.6
    # the same face, aligned the same way: only the squeeze's lost detail differs
    core = align.crop_mask() > 0.99
    err = np.abs(crops["dv"] - crops["square"]).mean(1)[:, core]
    assert float(err.mean()) * 255 < 6.0
    # the change sits on the squeezed face: its box is the display box squeezed by the SAR
    display_box = align.mask_box(align.paste_mask(track_transforms(trackset.tracks[0])[0], (SIZE, SIZE)) > 0.5)
    ys, xs = np.nonzero(changed)
    assert abs((xs.max() + 1 + xs.min()) / 2 - (display_box[0] + display_box[2]) / 2 / float(sar)) < 2
    assert abs((xs.max() + 1 - xs.min()) - (display_box[2] - display_box[0]) / float(sar)) < 3
    assert abs((ys.max() + 1 - ys.min()) - (display_box[3] - display_box[1])) < 3
    # through the whole restore: faces found in square pixels, SAR, frames and times kept
    report = _run(src, tmp_path / "out.mkv", Brighten(10.0), "encode.codec=libx264", "encode.crf=0")
    got = probe(tmp_path / "out.mkv")
    assert got.sar == sar and got.pts == probe(src).pts and report["picture"]["pixel_aspect"].startswith("SAR 32/27")
    assert sum(t["frames_touched"] for t in report["tracks"]) >= N_FRAMES - 2


def _shifted(picture, dx):
    return cv2.warpAffine(picture, np.float32([[1, 0, dx], [0, 1, 0]]), picture.shape[1::-1],
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)


FIELD_STEP = 3.0  # px the face moves from one field to the next: fast enough to comb when fields mix


@pytest.fixture(scope="module")
def interlaced(face, tmp_path_factory):
    """Top-field-first 4:2:2 frames woven from field-rate pictures of a face moving sideways, and the
    face's landmarks at each frame's first field."""
    pictures = [_shifted(face.clean[0], FIELD_STEP * j) for j in range(2 * N_FRAMES)]
    frames = synth.interlace(pictures, top_first=True)
    src = synth.write_clip(tmp_path_factory.mktemp("tv") / "tv.mkv", frames,
                           synth.ClipSpec(codec="ffv1", pix_fmt="yuv422p", field_order=2))
    landmarks = np.stack([face.landmarks[0] + [2 * FIELD_STEP * k, 0] for k in range(N_FRAMES)])
    return src, ground_truth_trackset(landmarks)


def test_interlaced_faces_do_not_comb(interlaced):
    """Each output field still shows its own instant: a restorer that smooths vertically must not blend
    the two fields' faces (on a deinterlacing display that is a doubled, combed face)."""
    src, trackset = interlaced
    assert probe(src).field_order == "tt"
    frames = list(decode(src))
    restore_frames(frames, trackset, None, VerticalBlur(), _cfg())
    transforms = track_transforms(trackset.tracks[0])
    for k, (before, after) in enumerate(zip(decode(src), frames)):
        x0, y0, x1, y1 = align.mask_box(_face_core(transforms[k], before.shape))
        y0 -= y0 % 2
        y1 -= (y1 - y0) % 2
        a, b = before.planes()[0][y0:y1, x0:x1].astype(np.float32), after.planes()[0][y0:y1, x0:x1].astype(np.float32)
        assert np.abs(a - b).mean() > 1.0  # the restorer did change the face
        for p in (0, 1):
            shift, _ = cv2.phaseCorrelate(a[p::2], b[p::2])
            own = np.abs(b[p::2] - a[p::2]).mean()
            other = np.abs(b[p::2] - a[1 - p::2]).mean()
            # mixed fields measured 0.30 px and own ~ other; kept fields 0.05 px and own ~ other / 2
            assert abs(shift[0]) < 0.15 and own < 0.6 * other, (k, p, shift, own, other)


@pytest.mark.parametrize("codec", ["ffv1", "libx264"])
def test_interlaced_restore_keeps_field_order_and_frames(interlaced, tmp_path, codec):
    src, _ = interlaced
    report = _run(src, tmp_path / "out.mkv", Brighten(10.0), f"encode.codec={codec}")
    got, info = probe(tmp_path / "out.mkv"), probe(src)
    assert got.field_order == "tt" and got.pts == info.pts and got.frame_count == info.frame_count
    if codec == "libx264":  # coded as fields, not only tagged
        assert all(frame.native.interlaced_frame for frame in decode(tmp_path / "out.mkv"))
    assert report["picture"]["fields"].startswith("interlaced (tt")
    assert sum(t["frames_touched"] for t in report["tracks"]) >= N_FRAMES - 2


@pytest.fixture(scope="module")
def phone(face, tmp_path_factory):
    """A portrait phone clip stored sideways (landscape samples, display matrix: rotate 90 degrees)."""
    pad = 24
    upright = [np.pad(f, ((pad, pad), (0, 0), (0, 0)), mode="reflect") for f in face.clean[:N_FRAMES]]
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]
    src = synth.write_clip(tmp_path_factory.mktemp("phone") / "phone.mp4", stored,
                           synth.ClipSpec(rotation=90, options={"qp": "0", "preset": "ultrafast"}))
    return src, upright, face.landmarks[:N_FRAMES] + [0, pad]


def test_rotated_faces_are_found_upright_and_written_back_where_they_are_stored(phone, tmp_path):
    src, upright, landmarks = phone
    info = probe(src)
    assert info.rotation == 90 and (info.width, info.height) == (SIZE + 48, SIZE)
    from tracking.detect import detect_chunk

    found = detect_chunk(src, 0, N_FRAMES, _cfg())
    for k, faces in enumerate(found.faces):
        assert len(faces) == 1
        assert np.abs(faces[0].landmarks - landmarks[k]).max() < 6  # upright: eyes above the mouth, in place
    report = _run(src, tmp_path / "out.mov", Brighten(20.0), "encode.codec=libx264", "encode.crf=0")
    got = probe(tmp_path / "out.mov")
    assert got.rotation == 90 and got.pts == info.pts and report["picture"]["rotation"].startswith("stored turned")
    transforms = track_transforms(ground_truth_trackset(landmarks).tracks[0])
    for k, (a, b) in enumerate(zip(decode(src), decode(tmp_path / "out.mov"))):
        change = np.asarray(b.rgb, np.float32).mean(-1) - np.asarray(a.rgb, np.float32).mean(-1)
        core = _face_core(transforms[k], a.rgb.shape[:2])
        outside = align.paste_mask(transforms[k], a.rgb.shape[:2], 0.1) == 0
        assert np.median(change[core]) > 15 and np.abs(change[outside]).mean() < 0.5


def test_probe_shows_field_order_aspect_and_hdr(interlaced, face, tmp_path, capsys):
    from pipeline.cli import main

    src, _ = interlaced
    pq = synth.write_clip(tmp_path / "pq.mp4", face.clean[:2],
                          synth.ClipSpec(pix_fmt="yuv420p10le", color=(9, 16, 9, 1), sar=Fraction(4, 3),
                                         codec="libx265", options={"preset": "ultrafast", "x265-params": "log-level=error"}))
    shown = {}
    for name, path in (("tv", src), ("pq", pq)):
        assert main(["probe", str(path)]) == 0
        shown[name] = json.loads(capsys.readouterr().out)
    assert shown["tv"]["field_order"] == "tt" and shown["tv"]["hdr"] is None and shown["tv"]["dar"] == "1/1"
    assert shown["pq"]["hdr"] == "PQ" and shown["pq"]["sar"] == "4/3" and shown["pq"]["dar"] == "4/3"
    assert shown["pq"]["field_order"] == "progressive"


def test_analyze_preview_of_a_sideways_clip_is_upright(phone, tmp_path):
    from tracking.analyze import analyze

    src, upright, _ = phone
    trackset = analyze(src, tmp_path / "tracks.json", _cfg(), preview=tmp_path / "preview.mp4")
    assert trackset.tracks
    got = probe(tmp_path / "preview.mp4")
    assert (got.width, got.height) == (upright[0].shape[1], upright[0].shape[0]) and got.frame_count == N_FRAMES


def test_hlg_reference_white_and_round_trip():
    """HLG 75 % (BT.2408 reference white) is white in the working space; a change undone gives the codes back."""
    import av

    colour = colour_for(av.VideoFormat("yuv444p10le", 4, 4), 10, 9, 1, 18, 9)  # limited YUV, HLG, BT.2020
    luma = np.arange(64, 941, dtype=np.uint16)
    planes = [np.tile(luma, (2, 1)), np.full((2, luma.size), 512, np.uint16), np.full((2, luma.size), 512, np.uint16)]
    working = colour.to_working(planes, [(1, 1)] * 3)[0]
    white = round(64 + 0.75 * 876) - 64
    assert np.abs(working[white] - 255).max() < 1.5  # grey stays grey through the primaries' matrix
    changed = [p.copy() for p in planes]
    colour.add_change(changed, [(1, 1)] * 3, np.full((2, luma.size, 3), 5.0, np.float32))
    assert (changed[0] > planes[0]).mean() > 0.95
    colour.add_change(changed, [(1, 1)] * 3, np.full((2, luma.size, 3), -5.0, np.float32))
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(changed, planes))
