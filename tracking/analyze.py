"""`reelface analyze IN -o tracks.json [--preview preview.mp4]`: detect, track, write tracks (and a preview)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .build import build_tracks
from .detect import detect_chunk
from .faces import TrackSet

LANDMARK_COLOURS = [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 255, 0), (255, 0, 255)]


def person_colour(person_id: int) -> tuple[int, int, int]:
    hue = (person_id * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(v) for v in bgr)


def draw_faces(rgb: np.ndarray, trackset: TrackSet, frame_index: int) -> np.ndarray:
    """Boxes coloured by person, 'P<person> T<track>' labels, landmarks; bridged (predicted) faces dashed
    grey labels; the shot number top-left, 'CUT' on a shot's first frame."""
    out = np.ascontiguousarray(rgb.copy())
    scale = max(1, round(out.shape[0] / 360))
    for track, i in trackset.faces_at(frame_index):
        colour = person_colour(track.person_id)
        x1, y1, x2, y2 = (int(round(v)) for v in track.boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, scale)
        label = f"P{track.person_id} T{track.track_id}" + ("" if track.detected[i] else " ~")
        cv2.putText(out, label, (x1, max(12 * scale, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, colour,
                    scale, cv2.LINE_AA)
        for point, c in zip(track.landmarks[i], LANDMARK_COLOURS):
            cv2.circle(out, (int(round(point[0])), int(round(point[1]))), 2 * scale, c, -1, cv2.LINE_AA)
    shot = trackset.shot_of(frame_index)
    text = f"#{frame_index} shot {shot}" + (" CUT" if frame_index in trackset.cuts else "")
    cv2.putText(out, text, (6, 16 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), scale,
                cv2.LINE_AA)
    return out


def write_preview(path: str | Path, source: str | Path, trackset: TrackSet, info) -> None:
    import av

    from pipeline.outputs import written
    from pipeline.video import decode

    rate = info.average_rate or 25
    with written(path) as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        width, height = info.display_size  # frame.rgb: upright, square pixels
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for frame in decode(source, 0, None, info):
            picture = draw_faces(frame.rgb, trackset, frame.index)[: stream.height, : stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def analyze(input, tracks_json, cfg, preview=None, overwrite: bool = False) -> TrackSet:
    """Detect and track every face of `input`; write the tracks (and a preview video), each checked
    before any work by the output guard."""
    from pipeline.preflight import check_analyze
    from pipeline.video import probe

    info = probe(input)
    out = Path(tracks_json)
    check_analyze(Path(input), info, out, Path(preview) if preview else None, overwrite)
    from tqdm import tqdm

    began = time.perf_counter()
    with tqdm(total=info.frame_count, unit="frame", desc="detect", disable=None) as bar:
        detections = detect_chunk(input, 0, info.frame_count, cfg, on_frame=bar.update)
    trackset = build_tracks([detections], info.frame_count, cfg)
    if preview:
        write_preview(preview, input, trackset, info)
    trackset.to_json(out)
    seconds = time.perf_counter() - began
    print(f"{info.frame_count} frames in {seconds:.1f} s ({info.frame_count / max(seconds, 1e-9):.1f} frames/s): "
          f"{len(trackset.tracks)} tracks, {len(trackset.person_ids)} persons, {len(trackset.cuts)} cuts "
          f"-> {out}" + (f", {preview}" if preview else ""), file=sys.stderr)
    return trackset
