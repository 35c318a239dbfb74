"""reelface: restore every face in a video, keep everything else untouched."""

__version__ = "0.1.0"
