"""Final assembly: the new video packets + every other stream of the source, copied packet for packet.

PyAV does the muxing (no `ffmpeg -f concat`: its concat demuxer restarts timestamps at 0, which
desyncs a video that starts late). Packets keep their pts/dts; MP4/MOV get the video time base as
their movie timescale so the start offset (an edit list) stays exact.

Where the target container cannot hold a stream as it is, it is converted where the content survives:
text subtitles change codec (mov_text -> SubRip for Matroska; SubRip/ASS -> mov_text for MP4/MOV, text
and timing kept, styling dropped), and a QuickTime timecode track becomes the video's timecode tag
(the MOV/MP4 muxer writes it back as a tmcd track, Matroska keeps it as a tag). After assembly
every frame time and the start of every copied stream are compared with the source (`check_timing`):
a container that moves them (MPEG-TS's muxing offsets, Matroska shifting all streams after a negative
audio start) is refused, and `rehearse` finds that out on the first frames before any work.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av

from .errors import ReelfaceError
from .outputs import written
from .video import VideoInfo, VideoWriter, choose_pix_fmt, decode, encoder_name, open_input, working_format

_MOV_FAMILY = {".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".m4a"}
_MATROSKA = {".mkv", ".mka", ".mks", ".webm"}
_NEGATIVE_START = _MATROSKA | {".ts", ".m2ts", ".mts"}
# libavformat writes its own: the tool that made the file, and the MP4 brands that name the codecs inside.
_SKIP_METADATA = {"encoder", "major_brand", "minor_version", "compatible_brands"}
_EVEN_SIZE_ENCODERS = {"libx264", "libx265"}  # refuse odd sizes with subsampled chroma (FFV1 and ProRes do not)
REHEARSAL_FRAMES = 12  # enough for an encoder's reorder delay and the first packets of every stream

def container_options(output: Path, time_bases: list[Fraction]) -> dict[str, str]:
    """MP4/MOV: a movie timescale in which every stream's start offset (edit list) is exact.

    The default (1/1000) moved hamilton.mp4's video by 9 ticks; the video's own denominator alone
    still moved its audio (1/44100) by 4, so take the least common multiple of all of them.
    Matroska and MPEG-TS: no shift of every stream when one starts before 0 (AAC's priming packet at
    -1024 samples moved all of an MP4's frames by 23 ms); both store such a start as it is.
    """
    if output.suffix.lower() not in _MOV_FAMILY:
        return {"avoid_negative_ts": "disabled"} if output.suffix.lower() in _NEGATIVE_START else {}
    scale = 1
    for tb in time_bases:
        scale = math.lcm(scale, tb.denominator)
    if scale > 2**31 - 1:  # the mvhd field is 32 bits: keep the video exact at least
        scale = time_bases[0].denominator
    return {"movie_timescale": str(scale)}


def exact_timestamps(output: Path, info: VideoInfo) -> bool:
    """Matroska/WebM store 1 ms timestamps: False when some frame's time is not a whole millisecond."""
    if output.suffix.lower() not in _MATROSKA:
        return True
    return all((pts * info.time_base * 1000).denominator == 1 for pts in info.pts)


# PyAV opens a subtitle encoder only with an ASS header; the stream's packets are then written as they
# are (no encoding), so a minimal header does.
_ASS_HEADER = (b"[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
               b"Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n")
# Text subtitles a container cannot hold -> the text codec it can (Matroska has no mov_text; MP4/MOV
# hold only mov_text). Styling that the target has no way to carry is dropped; the text and the
# timing are kept.
_TEXT_TARGET = {"mov_text": "subrip", "srt": "mov_text", "subrip": "mov_text", "ass": "mov_text", "ssa": "mov_text"}


def _stream_name(stream: av.stream.Stream) -> str:
    return f"#{stream.index} ({stream.type}, {stream.codec_context.name if stream.codec_context else 'no codec'})"


def _subtitle_text(codec: str, data: bytes) -> str:
    """The plain text of one subtitle packet."""
    if codec == "mov_text":  # a 16-bit text length, the UTF-8 text, then style boxes
        return data[2:2 + int.from_bytes(data[:2], "big")].decode("utf-8", "replace")
    text = data.decode("utf-8", "replace")
    if codec in ("ass", "ssa"):  # ReadOrder, Layer, Style, Name, MarginL, MarginR, MarginV, Effect, Text
        text = re.sub(r"\{[^}]*\}", "", text.split(",", 8)[-1]).replace("\\N", "\n").replace("\\n", "\n")
    return re.sub(r"</?[a-zA-Z][^>]*>", "", text)  # SubRip's <i>, <b>, <font ...>


def _has_content(packet: av.Packet) -> bool:
    """False for a subtitle sample without text: MP4 muxers fill the gap before the first cue with one
    (at 0), which other containers do not have, so a stream's start is its first cue."""
    stream = packet.stream
    if stream.type != "subtitle" or stream.codec_context is None or stream.codec_context.name not in _TEXT_TARGET:
        return True
    return bool(_subtitle_text(stream.codec_context.name, bytes(packet)).strip())


def _converter(source_codec: str, target_codec: str):
    """packet -> packet of the target text codec, or None for a sample with no text (mov_text writes
    an empty sample to end a cue; the other codecs give each cue its own duration)."""
    def convert(packet: av.Packet) -> av.Packet | None:
        text = _subtitle_text(source_codec, bytes(packet)).encode()
        if not text:
            return None
        new = av.Packet(len(text).to_bytes(2, "big") + text if target_codec == "mov_text" else text)
        new.pts, new.dts, new.duration, new.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
        return new
    return convert


def _add_copy(out: av.container.OutputContainer, template: av.stream.Stream, output: Path):
    """The output stream for a copied stream, and the packet conversion it needs (None: copy as is)."""
    convert = None
    try:
        if template.type == "attachment" and output.suffix.lower() not in _MATROSKA:
            raise ValueError("only Matroska has attachments")  # the others fail later, at the header
        stream = out.add_stream_from_template(template)
    except ValueError:
        codec = template.codec_context.name if template.codec_context else None
        try:
            if template.type != "subtitle" or codec not in _TEXT_TARGET:
                raise ValueError(codec)
            stream = out.add_stream(_TEXT_TARGET[codec])
        except ValueError:
            raise ReelfaceError(
                f"the output container ({output.suffix or 'no suffix'}) cannot hold stream {_stream_name(template)}; "
                "write to a container that can (.mkv holds most streams; .mp4/.mov hold mov_text subtitles and "
                "timecode)") from None
        stream.codec_context.subtitle_header = _ASS_HEADER
        convert = _converter(codec, _TEXT_TARGET[codec])
    stream.metadata.update(template.metadata)
    stream.disposition = template.disposition
    return stream, convert


def _is_timecode(stream: av.stream.Stream) -> bool:
    return stream.type == "data" and "timecode" in stream.metadata


def _copied(src: av.container.InputContainer, info: VideoInfo) -> list[av.stream.Stream]:
    """Every stream but the restored video, less those the demuxer discards (an MP4 chapter track: the
    muxer writes it anew from the chapters) and timecode tracks (carried as the video's timecode tag)."""
    return [s for s in src.streams if s.index != info.video_index and s.discard != av.stream.Discard.all
            and not _is_timecode(s)]


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


def _source_packets(src: av.container.InputContainer, stream_map: dict, until: Fraction | None,
                    starts: dict[int, Fraction]) -> Iterator[av.Packet]:
    """The copied streams' packets (converted where needed), those before `until` seconds only if given;
    notes each stream's earliest time in `starts` for the timing check."""
    copied = [s for s in src.streams if s.index in stream_map]
    if not copied:
        return
    for packet in src.demux(copied):
        if not packet.size and packet.pts is None:
            continue
        index = packet.stream_index
        at = None if packet.pts is None else packet.pts * packet.time_base
        if until is not None and at is not None and at >= until:
            if at > until + 2:  # past the demuxer's interleaving distance: nothing earlier follows
                return
            continue
        if at is not None and (index not in starts or at < starts[index]) and _has_content(packet):
            starts[index] = at
        stream, convert = stream_map[index]
        if convert is not None:
            packet = convert(packet)
            if packet is None:
                continue
        packet.stream = stream
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


def assemble(segments: list[Path], source: Path, output: Path, info: VideoInfo, frame_count: int | None = None,
             until: Fraction | None = None, shown: Path | None = None) -> None:
    """Write `output`: the segments' video (in order) + every other stream, chapter and tag of `source`
    (their packets before `until` seconds only, if given), then check its timing against the source
    (`frame_count` frames) before it takes the output's name. Errors name `shown` (default: output)."""
    output = Path(output)
    shown = shown or output
    frame_count = info.frame_count if frame_count is None else frame_count
    try:
        with written(output) as tmp, open_input(source) as src, av.open(str(segments[0])) as first:
            copied = _copied(src, info)
            time_bases = [info.time_base] + [s.time_base for s in copied if s.time_base]
            options = container_options(output, time_bases)
            timecode = next((s.metadata["timecode"] for s in src.streams if _is_timecode(s)), None)
            if timecode and output.suffix.lower() in _MOV_FAMILY:
                options["write_tmcd"] = "1"  # MP4 too: the muxer writes a tmcd track only for MOV by default
            out = av.open(str(tmp), "w", container_options=options)
            starts: dict[int, Fraction] = {}
            try:
                stream_map = {}
                video_out = None
                for stream in src.streams:
                    if stream.index == info.video_index:
                        video_out, _ = _add_copy(out, first.streams.video[0], output)
                        video_out.metadata.clear()
                        video_out.metadata.update(stream.metadata)
                        if timecode:
                            video_out.metadata["timecode"] = timecode
                        video_out.disposition = stream.disposition
                        _set_video_tags(video_out, info)
                    elif stream.index in {s.index for s in copied}:
                        stream_map[stream.index] = _add_copy(out, stream, output)
                out.metadata.update({k: v for k, v in src.metadata.items() if k.lower() not in _SKIP_METADATA})
                chapters = src.chapters()
                if chapters:
                    out.set_chapters(chapters)
                for packet in _interleave(_segment_packets(segments, video_out),
                                          _source_packets(src, stream_map, until, starts)):
                    out.mux(packet)
            finally:
                out.close()
            copies = {src.streams[i]: stream.index for i, (stream, _) in stream_map.items()}
            check_timing(tmp, shown, info, frame_count, video_out.index, copies, starts)
    except av.error.FFmpegError as exc:
        raise ReelfaceError(f"writing {shown} failed ({exc.strerror or exc}): its container cannot take these "
                            "streams, or the disk is full; write .mkv (it holds most streams)") from None


def check_timing(path: Path, output: Path, info: VideoInfo, frame_count: int, video_index: int, copied: dict,
                 starts: dict) -> None:
    """Every video frame at its source time and every copied stream starting where it started, each
    within one tick of the coarser time base (Matroska stores milliseconds); the same kinds of stream.
    `copied`: source stream -> its index in the output; `starts`: source stream index -> first time."""
    with av.open(str(path)) as out:
        video = out.streams[video_index]
        times: list[Fraction] = []
        firsts: dict[int, Fraction] = {}
        for packet in out.demux():
            if packet.pts is None or (not packet.size and packet.stream.type == "video"):
                continue
            at = packet.pts * packet.time_base
            if packet.stream_index == video.index:
                times.append(at)
            if (packet.stream_index not in firsts or at < firsts[packet.stream_index]) and _has_content(packet):
                firsts[packet.stream_index] = at
        kinds = {s.index: s.type for s in out.streams}
        time_bases = {s.index: s.time_base for s in out.streams}
        video_tb = video.time_base
    where = f"the {output.suffix} container"
    if len(times) != frame_count:
        raise ReelfaceError(f"{where} kept {len(times)} of the {frame_count} video frames; write .mp4, .mov or .mkv")
    times.sort()
    tick = max(video_tb, info.time_base)
    for k, (got, pts) in enumerate(zip(times, info.pts)):
        if abs(got - pts * info.time_base) > tick:
            raise ReelfaceError(f"{where} moves the video: frame {k} at {float(got):.4f} s instead of "
                                f"{float(pts * info.time_base):.4f} s; write .mp4 or .mov (exact times)")
    for source_stream, index in copied.items():
        if kinds[index] != source_stream.type:
            raise ReelfaceError(f"{where} turns stream {_stream_name(source_stream)} into a {kinds[index]} "
                                "stream; write .mp4, .mov or .mkv")
        if source_stream.index in starts and index in firsts:
            moved = firsts[index] - starts[source_stream.index]
            if abs(moved) > max(tick, source_stream.time_base or tick, time_bases[index] or tick):
                raise ReelfaceError(f"{where} moves stream {_stream_name(source_stream)} by "
                                    f"{float(moved) * 1000:+.1f} ms against the video (it would play out of "
                                    "sync); write another container (.mov and .mp4 keep exact times)")


def rehearse(source: Path, output: Path | None, info: VideoInfo, encode_cfg, segment_suffix: str) -> None:
    """Before any work: the first frames through the configured encoder and options into a segment, and
    (unless `output` is None) that segment with the source's other streams into the output's container,
    timing checked. What would fail or drift at the end of a long run (encoder options, frame size, a
    stream the container cannot hold, a container that moves timestamps) fails here, leaving nothing."""
    import tempfile

    codec = encoder_name(encode_cfg.codec)
    pix_fmt = choose_pix_fmt(codec, working_format(av.VideoFormat(info.pix_fmt)), encode_cfg.pix_fmt)
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    subsampled = fmt.chroma_width() < 64 or fmt.chroma_height() < 64
    # asked first: x265 prints its own refusal on stderr, the one place an error would not be one line
    if codec in _EVEN_SIZE_ENCODERS and subsampled and (info.width % 2 or info.height % 2):
        raise ReelfaceError(f"encoder {codec} cannot encode this {info.width}x{info.height} video as {pix_fmt}: it "
                            "needs an even width and height for chroma-subsampled video; use --encoder ffv1 (any "
                            "size), --set encode.pix_fmt=yuv444p, or crop the input to an even size")
    count = min(REHEARSAL_FRAMES, info.frame_count)
    until = info.pts[count] * info.time_base if count < info.frame_count else None
    with tempfile.TemporaryDirectory(prefix="reelface-check-") as folder:
        segment = Path(folder) / f"segment{segment_suffix}"
        try:
            with VideoWriter(segment, info, encode_cfg) as writer:
                for frame in decode(source, 0, count, info=info):
                    writer.write(frame)
        except av.error.FFmpegError as exc:
            raise ReelfaceError(f"encoder {codec} cannot encode this {info.width}x{info.height} {info.pix_fmt} "
                                f"video as {pix_fmt} ({exc.strerror or exc}); check encode.* in the config") from None
        if output is not None:
            assemble([segment], source, Path(folder) / f"output{output.suffix}", info, count, until, shown=output)


def _set_video_tags(stream, info: VideoInfo) -> None:
    """Time base, colour tags, aspect, field order and display matrix of the source on the new video stream."""
    stream.time_base = info.time_base
    cc = stream.codec_context
    cc.color_primaries, cc.color_trc = info.color_primaries, info.color_trc
    cc.colorspace, cc.color_range = info.colorspace, info.color_range
    if info.sar:
        cc.sample_aspect_ratio = info.sar
    if info.average_rate:  # the rate a timecode track counts in (the encoder's is 1 / time base)
        cc.framerate = info.average_rate
    cc.field_order = info.field_order_code
    if info.display_matrix:
        stream.set_display_matrix(info.display_matrix)
