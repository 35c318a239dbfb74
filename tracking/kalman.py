"""Constant-velocity Kalman filter on a face box (centre, width, height), with landmarks carried along.

Noise scales with the face height (as in DeepSORT): a 20 px face and a 400 px face jitter by the same
fraction of their size, so one set of constants fits every face.
"""

from __future__ import annotations

import numpy as np
from filterpy.kalman import KalmanFilter

from .faces import Face

POSITION_STD = 1 / 20  # of the face height, per frame: measurement and process noise on position
VELOCITY_STD = 1 / 160  # of the face height, per frame: process noise on velocity
CHI2_GATE_4DOF = 9.4877  # 95% quantile of chi-square with 4 degrees of freedom


def box_to_z(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], np.float64)


def z_to_box(z: np.ndarray) -> np.ndarray:
    cx, cy, w, h = z[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


class KalmanBoxTracker:
    """One face's motion. Knows only predict / update / gating; the tracker decides what to match."""

    def __init__(self, face: Face, frame_index: int):
        self.kf = KalmanFilter(dim_x=8, dim_z=4)
        self.kf.H = np.eye(4, 8)
        z = box_to_z(face.box)
        self.kf.x = np.concatenate([z, np.zeros(4)])[:, None]
        h = max(z[3], 1.0)
        self.kf.P = np.diag(np.square([2 * POSITION_STD * h] * 4 + [10 * VELOCITY_STD * h] * 4))
        self.frame_index = frame_index
        self._remember_landmarks(face)

    def _remember_landmarks(self, face: Face) -> None:
        z = box_to_z(face.box)
        self.landmark_offsets = (face.landmarks - z[:2]) / np.maximum(z[2:4], 1.0)

    def _noise(self, dt: int) -> None:
        h = max(float(self.kf.x[3, 0]), 1.0)
        self.kf.F = np.eye(8)
        self.kf.F[:4, 4:] = dt * np.eye(4)
        self.kf.Q = np.diag(np.square([POSITION_STD * h] * 4 + [VELOCITY_STD * h] * 4)) * dt
        self.kf.R = np.diag(np.square([POSITION_STD * h] * 4))

    def predict(self, frame_index: int) -> None:
        """Advance the state to `frame_index` (any number of frames ahead)."""
        dt = frame_index - self.frame_index
        if dt <= 0:
            return
        self._noise(dt)
        if self.kf.x[2, 0] + dt * self.kf.x[6, 0] <= 1 or self.kf.x[3, 0] + dt * self.kf.x[7, 0] <= 1:
            self.kf.x[6:8] = 0  # a face cannot shrink through zero: stop the size trend instead
        self.kf.predict()
        self.frame_index = frame_index

    def update(self, face: Face) -> None:
        self._noise(1)
        self.kf.update(box_to_z(face.box)[:, None])
        self._remember_landmarks(face)

    def mahalanobis2(self, boxes: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each box (M,4) from the predicted measurement."""
        if len(boxes) == 0:
            return np.zeros(0)
        self._noise(1)
        S = self.kf.H @ self.kf.P @ self.kf.H.T + self.kf.R
        y = np.array([box_to_z(b) for b in boxes]) - (self.kf.H @ self.kf.x)[:, 0]
        return np.einsum("ij,jk,ik->i", y, np.linalg.inv(S), y)

    @property
    def box(self) -> np.ndarray:
        return z_to_box(self.kf.x[:, 0])

    @property
    def landmarks(self) -> np.ndarray:
        z = self.kf.x[:4, 0]
        return (z[:2] + self.landmark_offsets * z[2:4]).astype(np.float32)
