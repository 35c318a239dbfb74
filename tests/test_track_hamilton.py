"""`reelface analyze` on ../shared/data/clips/hamilton.mp4 (640x360, 275 frames): cuts and people.

How the expected counts were verified (by eye, on the preview this command writes, frames rendered to PNG
with their boxes, "P<person> T<track>" labels and landmarks, plus 4x crops of the raw frames where faces
are small or blurred, and a contact sheet of every 5th frame to rule out other cuts):
- 4 shots, cuts at frames 20, 82 and 211: 0-19 wide stage shot (performer with microphone standing on the
  right, pianist seated bottom left), 20-81 close profile of the curly-haired pianist with four
  out-of-focus spectators behind him, 82-210 the performer (Lin-Manuel Miranda) singing, 211-274 six
  spectators (Barack and Michelle Obama, Marian Robinson, a woman top left, a blurred face behind her,
  a dim face cut by the right edge).
- 14 face tracks: 2 + 5 + 1 + 6 per shot; the performer's tracks in shots 0 and 2 are one person.
- 13 person ids for 12 people: the pianist's face in shot 0 is 26 px wide and too small for the embedder,
  so it is deliberately not linked to his close-up in shot 1 (no appearance evidence: a new id, never a
  guess). The blurred spectators of shot 1 stay separate from the audience of shot 3 (different side of
  the room, unrecognisable).
"""

import json

from pipeline.cli import main

EXPECTED_CUTS = [20, 82, 211]
EXPECTED_TRACKS_PER_SHOT = [2, 5, 1, 6]
EXPECTED_PERSONS = 13


def test_analyze_hamilton(data_dir, tmp_path):
    out, preview = tmp_path / "tracks.json", tmp_path / "preview.mp4"
    assert main(["analyze", str(data_dir / "clips" / "hamilton.mp4"), "-o", str(out), "--preview", str(preview)]) == 0
    data = json.loads(out.read_text())
    assert data["frame_count"] == 275
    assert data["cuts"] == EXPECTED_CUTS
    tracks = data["summary"]
    per_shot = [sum(1 for t in tracks if t["shot"] == s) for s in range(len(EXPECTED_CUTS) + 1)]
    assert per_shot == EXPECTED_TRACKS_PER_SHOT
    assert len(data["persons"]) == EXPECTED_PERSONS
    # the performer: the biggest face of the wide shot, and the only face of shot 2
    performer_0 = max((t for t in tracks if t["shot"] == 0), key=lambda t: t["median_size"])
    (performer_2,) = [t for t in tracks if t["shot"] == 2]
    assert performer_0["person_id"] == performer_2["person_id"]
    # every frame lists its faces; no person twice in one frame
    assert len(data["frames"]) == 275
    for frame in data["frames"]:
        persons = [f["person_id"] for f in frame["faces"]]
        assert len(persons) == len(set(persons))
    assert preview.stat().st_size > 10_000
