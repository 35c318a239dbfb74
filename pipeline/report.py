"""The sidecar report of a restore: `<output>.report.json`, a short `<output>.report.html` with a plot,
and a contact sheet of each track's references.

Per track: the frames touched, the references used (frames and matched photos), identity similarity of
the face to the track's own identity before/after restoration, and temporal error before/after (mean
squared change between consecutive aligned crops, so flicker shows and steady motion does not).
`process.restore_frames(..., stats=TrackStats collection)` gathers the numbers while it works.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import ReelfaceError
from .outputs import written


@dataclass
class TrackStats:
    track_id: int
    frames: list[int] = field(default_factory=list)
    identity_before: list[float] = field(default_factory=list)
    identity_after: list[float] = field(default_factory=list)
    temporal_before: list[float] = field(default_factory=list)
    temporal_after: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        mean = lambda v: round(float(np.mean(v)), 4) if v else None  # noqa: E731
        return {"track_id": self.track_id, "frames_touched": len(self.frames),
                "first_frame": min(self.frames) if self.frames else None,
                "last_frame": max(self.frames) if self.frames else None,
                "identity_before": mean(self.identity_before), "identity_after": mean(self.identity_after),
                "temporal_error_before": mean(self.temporal_before),
                "temporal_error_after": mean(self.temporal_after)}


PLOT_PANELS = (("temporal_error", "temporal error (lower is steadier)"),
               ("identity", "identity similarity to the track"))
PLOT_COLOURS = {"before": "#1f77b4", "after": "#ff7f0e"}  # input, restored


def _plot(tracks: list[dict]) -> str:
    """An SVG bar chart: temporal error and identity before/after per track. Written by hand: importing
    a plotting library took longer (~4 s on a busy 2-core machine) than the identity pass of a short clip."""
    panel_w, panel_h, top, bottom, left = 380, 200, 24, 28, 44
    width = len(PLOT_PANELS) * panel_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + panel_h + bottom + 16}" '
             'font-family="sans-serif" font-size="11">']
    for p, (key, title) in enumerate(PLOT_PANELS):
        x0 = p * panel_w + left
        plot_w = panel_w - left - 12
        values = [[t.get(f"{key}_{side}") or 0.0 for side in PLOT_COLOURS] for t in tracks]
        peak = max((max(v) for v in values), default=0.0) or 1.0
        slot = plot_w / max(len(tracks), 1)
        parts.append(f'<text x="{x0 + plot_w / 2:.1f}" y="14" text-anchor="middle">{html.escape(title)}</text>')
        parts.append(f'<line x1="{x0}" y1="{top + panel_h}" x2="{x0 + plot_w}" y2="{top + panel_h}" stroke="black"/>')
        parts.append(f'<text x="{x0 - 4}" y="{top + 4}" text-anchor="end">{peak:.3g}</text>')
        for k, (track, pair) in enumerate(zip(tracks, values)):
            for b, (side, colour) in enumerate(PLOT_COLOURS.items()):
                h = panel_h * pair[b] / peak
                parts.append(f'<rect x="{x0 + k * slot + slot * (0.1 + 0.4 * b):.1f}" y="{top + panel_h - h:.1f}" '
                             f'width="{slot * 0.4:.1f}" height="{h:.1f}" fill="{colour}"/>')
            parts.append(f'<text x="{x0 + (k + 0.5) * slot:.1f}" y="{top + panel_h + 14}" '
                         f'text-anchor="middle">{track["track_id"]}</text>')
    legend_y = top + panel_h + bottom + 8
    for b, (label, colour) in enumerate(zip(("input", "restored"), PLOT_COLOURS.values())):
        parts.append(f'<rect x="{left + 90 * b}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + 90 * b + 14}" y="{legend_y}">{label}</text>')
    parts.append("</svg>")
    return base64.b64encode("".join(parts).encode()).decode()


def report_paths(output: Path) -> dict[str, Path]:
    """The files a report writes beside `output`, by the name the output guard shows."""
    return {"report": output.with_name(output.name + ".report.json"),
            "report page": output.with_name(output.name + ".report.html"),
            "references sheet": output.with_name(output.name + ".references.png")}


def write_report(output: str | Path, run_info: dict, stats: dict[int, TrackStats], references: dict | None = None,
                 refs=None) -> dict[str, Path]:
    """Write the JSON, the HTML page and the references contact sheet beside `output`; returns their paths.

    run_info: anything about the run worth keeping (input, restorer, config digest, timings...).
    references: process-independent choice per track (references.TrackReferences), refs: the
    references.ReferenceStore of the run.
    """
    output = Path(output)
    files = report_paths(output)
    paths = {"json": files["report"], "html": files["report page"]}
    tracks = []
    for track_id, s in sorted(stats.items()):
        entry = s.summary()
        if references and track_id in references:
            chosen = references[track_id]
            entry["references"] = {"frames": chosen.frames, "scores": chosen.scores, "photos": chosen.photos,
                                   "person": chosen.person}
        tracks.append(entry)
    sheet = contact_sheet(refs, files["references sheet"]) if refs else None
    if sheet is not None:
        paths["references"] = sheet
    report = {**run_info, "tracks": tracks, "references_sheet": str(sheet) if sheet else None}
    with written(paths["json"]) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    rows = "".join(
        f"<tr><td>{t['track_id']}</td><td>{t['frames_touched']}</td><td>{t['first_frame']}-{t['last_frame']}</td>"
        f"<td>{t['identity_before']} &rarr; {t['identity_after']}</td>"
        f"<td>{t['temporal_error_before']} &rarr; {t['temporal_error_after']}</td>"
        f"<td>{html.escape(str(t.get('references', {}).get('frames', '')))}"
        f" {html.escape(', '.join(t.get('references', {}).get('photos', []) or []))}</td></tr>"
        for t in tracks)
    plot = f'<img alt="per-track plot" src="data:image/svg+xml;base64,{_plot(tracks)}">' if tracks else ""
    sheet_html = f'<h2>References</h2><img alt="references" src="{html.escape(sheet.name)}">' if sheet else ""
    info = html.escape(json.dumps(run_info, indent=1, default=str))
    page = (
        "<!doctype html><meta charset='utf-8'><title>reelface report</title>"
        f"<h1>reelface report: {html.escape(output.name)}</h1><pre>{info}</pre>"
        "<table border=1 cellpadding=4><tr><th>track</th><th>frames touched</th><th>span</th>"
        "<th>identity before &rarr; after</th><th>temporal error before &rarr; after</th><th>references</th></tr>"
        f"{rows}</table>{plot}{sheet_html}")
    with written(paths["html"]) as tmp:
        tmp.write_text(page)
    return paths


def contact_sheet(refs, path: str | Path, thumb: int = 128) -> Path | None:
    """A PNG with one row of reference thumbnails per track (track id written at the left), from a
    references.ReferenceStore read one track at a time (only the thumbnails are held)."""
    thumbs = {track_id: [cv2.resize(img, (thumb, thumb), interpolation=cv2.INTER_AREA) for img in refs.crops(track_id)]
              for track_id in refs.track_ids()}
    width = max(map(len, thumbs.values()), default=0)
    if width == 0:
        return None
    rows = []
    for track_id, images in thumbs.items():
        row = np.full((thumb, thumb * (width + 1), 3), 24, np.uint8)
        cv2.putText(row, f"track {track_id}", (6, thumb // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        for k, img in enumerate(images):
            row[:, thumb * (k + 1):thumb * (k + 2)] = img
        rows.append(row)
    path = Path(path)
    with written(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR)):
            raise ReelfaceError(f"writing {path} failed; check the disk space")
    return path


def stats_to_dict(stats: dict[int, TrackStats]) -> dict:
    return {k: asdict(v) for k, v in stats.items()}
