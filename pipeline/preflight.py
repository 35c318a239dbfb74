"""`check_inputs` of each command: everything a run will need, checked before any work starts.

A problem found after hours of detection leaves a work dir that says "rerun to resume" although no
rerun can help; so the config (validated when loaded), every output path, the input's frame size, the
reference photos, the restorer's weights, and the encoder with its options and the output container
(on the first frames: `mux.rehearse`) are all checked here first. Each failure is one ReelfaceError.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .errors import ReelfaceError
from .outputs import check_folder, check_outputs
from .picture import check_transfer
from .video import VideoInfo, check_one_size, segment_suffix


def check_restore(source: Path, target: Path, info: VideoInfo, cfg: Config, overwrite: bool, *,
                  with_faces: bool, custom_restorer: bool) -> None:
    """What `restore` needs: outputs (and the report beside them), one frame size, reference photos,
    the restorer's weights, the encoder and the output container."""
    from . import mux
    from .report import report_paths

    outputs: dict[str, Path | None] = {"output": target}
    if cfg.run.report and with_faces:
        outputs.update(report_paths(target))
    photos = [p for paths in cfg.references.photos.values() for p in paths]
    check_outputs(outputs, [source, *photos], overwrite, videos=("output",))
    check_one_size(source, info)
    if with_faces and photos:
        check_photos(photos, cfg)
    if with_faces:
        check_transfer(info.color_trc, cfg.restore.hdr)
    if not custom_restorer:
        from .restorers.registry import check_restorer

        check_restorer(cfg.restore)
    preview = cfg.run.preview_seconds is not None  # the preview is a side-by-side, not this container
    mux.rehearse(source, None if preview else target, info, cfg.encode, segment_suffix(cfg.encode.codec))


def check_photos(photos: list[str], cfg: Config) -> None:
    """Every reference photo is readable and shows a face."""
    from tracking.detectors import get_detector

    from .references import photo_face

    detector = get_detector(cfg)
    for photo in photos:
        photo_face(photo, detector)


def check_analyze(source: Path, info: VideoInfo, tracks: Path, preview: Path | None, overwrite: bool) -> None:
    check_outputs({"tracks file": tracks, "preview": preview}, [source], overwrite, videos=("preview",))
    check_one_size(source, info)


EVALUATION_FILES = ("side_by_side.mp4", "evaluation.json")


def check_evaluate(videos: dict[str, Path], out_dir: Path | None, overwrite: bool) -> dict[str, VideoInfo]:
    """Every video readable, of one frame size throughout, all of the same size and frame count;
    --out-dir a folder (or a new one in a writable folder) whose files may be written."""
    from .video import probe

    infos = {label: probe(path) for label, path in videos.items()}
    first_label, first = next(iter(infos.items()))
    for label, info in infos.items():
        check_one_size(videos[label], info)
        if (info.width, info.height, info.frame_count) != (first.width, first.height, first.frame_count):
            raise ReelfaceError(f"the {label} video {videos[label]} is {info.width}x{info.height} with "
                                f"{info.frame_count} frames but the {first_label} {videos[first_label]} is "
                                f"{first.width}x{first.height} with {first.frame_count}: compare the same clip")
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise ReelfaceError(f"--out-dir {out_dir} is a file; give a folder")
        if out_dir.is_dir():
            check_outputs({name: out_dir / name for name in EVALUATION_FILES}, list(videos.values()), overwrite,
                          videos=("side_by_side.mp4",))
        else:
            check_folder(out_dir.parent, "--out-dir parent")
    return infos
