"""Files that are not what reelface needs, for the bad-input tests."""

import av
import numpy as np


def audio_only(path):
    """An AAC file with no video stream."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
