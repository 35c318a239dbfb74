"""Short clips for the executor tests, cut from the shared footage (helpers, not tests)."""

from pathlib import Path

import av


def hamilton_head(src: Path, dst: Path, frames: int, gop: int) -> Path:
    """The first `frames` frames of `src` re-encoded (H.264, a keyframe every `gop` frames, the
    source's pts and time base) plus the source's audio over the same time: many small chunks in a
    few frames, and an audio stream for the assembly to carry."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", container_options={"movie_timescale": "11988"}) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate, options={
            "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "crf": "18", "preset": "veryfast"})
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.time_base = vout.codec_context.time_base = vin.time_base
        ain = inp.streams.audio[0] if inp.streams.audio else None
        aout = out.add_stream_from_template(ain) if ain else None  # every stream before the first packet
        decoded = []
        for frame in inp.decode(vin):
            decoded.append(frame)
            if len(decoded) == frames:
                break
        end = decoded[-1].pts * vin.time_base
        for frame in decoded:
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in vout.encode(frame):
                out.mux(packet)
        for packet in vout.encode(None):
            out.mux(packet)
        if ain:
            inp.seek(0)
            for packet in inp.demux(ain):
                if packet.pts is not None and packet.pts * ain.time_base <= end:
                    packet.stream = aout
                    out.mux(packet)
    return dst


def two_faces(faces_dir: Path, dst: Path, frames: int = 24, gop: int = 6, size=(256, 160)) -> Path:
    """A generated clip: two faces (aligned photos from ../shared/data/faces) drifting over a
    textured background, a hard cut half way after which they swap sides; H.264 with a keyframe
    every `gop` frames."""
    import cv2
    import numpy as np

    from pipeline import synth

    faces = {i: cv2.cvtColor(cv2.imread(str(faces_dir / name)), cv2.COLOR_BGR2RGB)
             for i, name in enumerate(["0143.png", "0342.png"])}
    width, height = size
    rng = np.random.default_rng(0)
    backgrounds = [cv2.resize((rng.random((10, 16, 3)) * 255).astype(np.uint8), size, interpolation=cv2.INTER_CUBIC)
                   for _ in range(2)]
    t = np.linspace(0, 1, frames)
    paths = {0: np.stack([width * (0.27 + 0.06 * t), height * (0.5 + 0.05 * np.sin(6 * t)), np.full(frames, 70.0)], 1),
             1: np.stack([width * (0.73 - 0.06 * t), height * (0.48 + 0.05 * np.cos(5 * t)), np.full(frames, 64.0)], 1)}
    paths[0][frames // 2:, 0] += width * 0.45
    paths[1][frames // 2:, 0] -= width * 0.45
    rgb, _, _ = synth.compose_faces(backgrounds, [frames // 2], faces, {k: v.astype(np.float32) for k, v in paths.items()})
    options = {"preset": "ultrafast", "crf": "18", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
    return synth.write_clip(dst, rgb, synth.ClipSpec(options=options))
