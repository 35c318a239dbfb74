"""Final assembly: the new video packets + every other stream of the source, copied packet for packet.

PyAV does the muxing (no `ffmpeg -f concat`: its concat demuxer restarts timestamps at 0, which
desyncs a video that starts late). Packets keep their pts/dts; MP4/MOV get the video time base as
their movie timescale so the start offset (an edit list) stays exact.
"""

from __future__ import annotations

import heapq
import math
import os
import uuid
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av

from .errors import ReelfaceError
from .video import VideoInfo, encoder_name, open_input

_MOV_FAMILY = {".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".m4a"}
# libavformat writes its own: the tool that made the file, and the MP4 brands that name the codecs inside.
_SKIP_METADATA = {"encoder", "major_brand", "minor_version", "compatible_brands"}


def container_options(output: Path, time_bases: list[Fraction]) -> dict[str, str]:
    """MP4/MOV: a movie timescale in which every stream's start offset (edit list) is exact.

    The default (1/1000) moved hamilton.mp4's video by 9 ticks; the video's own denominator alone
    still moved its audio (1/44100) by 4, so take the least common multiple of all of them.
    """
    if output.suffix.lower() not in _MOV_FAMILY:
        return {}
    scale = 1
    for tb in time_bases:
        scale = math.lcm(scale, tb.denominator)
    if scale > 2**31 - 1:  # the mvhd field is 32 bits: keep the video exact at least
        scale = time_bases[0].denominator
    return {"movie_timescale": str(scale)}


def exact_timestamps(output: Path, info: VideoInfo) -> bool:
    """Matroska/WebM store 1 ms timestamps: False when some frame's time is not a whole millisecond."""
    if output.suffix.lower() not in {".mkv", ".webm"}:
        return True
    return all((pts * info.time_base * 1000).denominator == 1 for pts in info.pts)


def temp_path(output: Path) -> Path:
    """A hidden name beside the output, same suffix (libavformat picks the format from it)."""
    return output.with_name(f".{output.stem}.{uuid.uuid4().hex[:8]}.partial{output.suffix}")


def _copy_stream(out: av.container.OutputContainer, template: av.stream.Stream, output: Path):
    try:
        stream = out.add_stream_from_template(template)
    except ValueError:
        name = template.codec_context.name if template.codec_context else template.type
        raise ReelfaceError(
            f"the output container ({output.suffix or 'no suffix'}) cannot hold stream #{template.index} "
            f"({template.type}, {name}); write to a container that can, e.g. .mkv") from None
    stream.metadata.update(template.metadata)
    stream.disposition = template.disposition
    return stream


def _copied(src: av.container.InputContainer, info: VideoInfo) -> list[av.stream.Stream]:
    """Every stream but the restored video, less those the demuxer discards: an MP4 chapter track
    is such a stream, and the muxer writes it anew from the chapters."""
    return [s for s in src.streams if s.index != info.video_index and s.discard != av.stream.Discard.all]


def check_output_container(source: Path, output: Path, info: VideoInfo, codec: str) -> None:
    """Fail before any work if the output's container cannot hold the new video or a copied stream.

    An output container that is never started writes nothing, so this leaves no file behind.
    """
    try:
        av.Codec(encoder_name(codec), "w")
    except ValueError:
        raise ReelfaceError(f"encoder '{codec}' is not available in this FFmpeg build; "
                            "use libx264, libx265, prores_ks or ffv1") from None
    try:
        out = av.open(str(temp_path(output)), "w")
    except ValueError:
        raise ReelfaceError(f"unknown output container '{output.suffix}'; use .mp4, .mov or .mkv") from None
    try:
        try:
            out.add_stream(encoder_name(codec))
        except ValueError:
            raise ReelfaceError(f"the output container ({output.suffix}) cannot hold {codec} video; "
                                "use .mkv (it holds every codec) or pick another encoder") from None
        with open_input(source) as src:
            for stream in _copied(src, info):
                _copy_stream(out, stream, output)
    finally:
        out.close()


def _segment_packets(segments: list[Path], out_stream) -> Iterator[av.Packet]:
    """The video packets of each segment in turn; one segment file open at a time.

    Each segment's encoder starts its dts a reorder delay before its first pts; with uneven frame
    gaps (VFR) that can reach back to the previous segment's last dts, which muxers refuse. Such a
    dts is moved just after the previous one (pts, the presentation time, never changes).
    """
    last_dts = None
    for path in segments:
        with av.open(str(path)) as seg:
            for packet in seg.demux(seg.streams.video[0]):
                if not packet.size:
                    continue
                if last_dts is not None and packet.dts is not None:
                    dts = Fraction(packet.dts) * packet.time_base
                    if dts <= last_dts:
                        packet.dts = math.floor(last_dts / packet.time_base) + 1
                if packet.dts is not None:
                    last_dts = Fraction(packet.dts) * packet.time_base
                packet.stream = out_stream
                yield packet


def _source_packets(src: av.container.InputContainer, stream_map: dict) -> Iterator[av.Packet]:
    copied = [s for s in src.streams if s.index in stream_map]
    if not copied:
        return
    for packet in src.demux(copied):
        if packet.size or packet.pts is not None:
            packet.stream = stream_map[packet.stream_index]
            yield packet


def _interleave(*feeds: Iterable[av.Packet]) -> Iterator[av.Packet]:
    """Merge the feeds by decode time, so the muxer's interleaving queue stays small (bounded memory)."""
    last: dict[int, Fraction] = {}

    def keyed(feed):
        for packet in feed:
            ts = packet.dts if packet.dts is not None else packet.pts
            if ts is None:
                at = last.get(id(feed), Fraction(-10**9))
            else:
                at = ts * packet.time_base
            last[id(feed)] = at
            yield at, packet

    for _, packet in heapq.merge(*(keyed(f) for f in feeds), key=lambda item: item[0]):
        yield packet


def assemble(segments: list[Path], source: Path, output: Path, info: VideoInfo) -> None:
    """Write `output`: the segments' video (in order) + every other stream, chapter and tag of `source`."""
    output = Path(output)
    tmp = temp_path(output)
    try:
        with open_input(source) as src, av.open(str(segments[0])) as first:
            time_bases = [info.time_base] + [s.time_base for s in _copied(src, info) if s.time_base]
            out = av.open(str(tmp), "w", container_options=container_options(output, time_bases))
            try:
                stream_map = {}
                video_out = None
                copied = {s.index for s in _copied(src, info)}
                for stream in src.streams:
                    if stream.index == info.video_index:
                        video_out = _copy_stream(out, first.streams.video[0], output)
                        video_out.metadata.clear()
                        video_out.metadata.update(stream.metadata)
                        video_out.disposition = stream.disposition
                        _set_video_tags(video_out, info)
                    elif stream.index in copied:
                        stream_map[stream.index] = _copy_stream(out, stream, output)
                out.metadata.update({k: v for k, v in src.metadata.items() if k.lower() not in _SKIP_METADATA})
                chapters = src.chapters()
                if chapters:
                    out.set_chapters(chapters)
                for packet in _interleave(_segment_packets(segments, video_out), _source_packets(src, stream_map)):
                    out.mux(packet)
            finally:
                out.close()
        os.replace(tmp, output)
    except av.error.FFmpegError as exc:
        tmp.unlink(missing_ok=True)
        raise ReelfaceError(f"writing {output} failed ({exc.strerror or exc}); check the disk space and "
                            "that the container suits the streams (.mkv holds anything)") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _set_video_tags(stream, info: VideoInfo) -> None:
    """Time base, colour tags, aspect and display matrix of the source on the new video stream."""
    stream.time_base = info.time_base
    cc = stream.codec_context
    cc.color_primaries, cc.color_trc = info.color_primaries, info.color_trc
    cc.colorspace, cc.color_range = info.colorspace, info.color_range
    if info.sar:
        cc.sample_aspect_ratio = info.sar
    if info.display_matrix:
        stream.set_display_matrix(info.display_matrix)
