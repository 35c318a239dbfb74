"""Zero-lag smoothing of a track's landmarks and box: a constant-velocity Kalman filter run forward,
then the Rauch-Tung-Striebel pass backward. The smoother uses future frames as well as past ones, so a
moving face is followed without the lag of a causal filter; frames without a measurement (detection
stride, bridged gaps) are filled by the same model.

Every coordinate shares one model whose noise scales with the face size, so one 2x2 covariance serves
all of them and the whole track is smoothed with a few numpy operations per frame.
"""

from __future__ import annotations

import numpy as np

MEASUREMENT_STD = 0.02  # detector jitter, as a fraction of the face size (x cfg.track.smoothing)
ACCELERATION_STD = 0.0015  # how fast a face's motion may change per frame, fraction of its size


def rts_smooth(values: np.ndarray, observed: np.ndarray, size: float, strength: float) -> np.ndarray:
    """Smooth (N, D) series `values` (rows where `observed` is False are ignored and filled).

    `size` is the face size in pixels; `strength` scales the assumed measurement noise (0: no smoothing,
    missing rows linearly interpolated).
    """
    values = np.asarray(values, np.float64)
    observed = np.asarray(observed, bool)
    n = len(values)
    if strength <= 0 or observed.sum() < 2:
        return _interpolate(values, observed).astype(np.float32)
    r = (MEASUREMENT_STD * strength * size) ** 2
    q = (ACCELERATION_STD * size) ** 2
    F = np.array([[1.0, 1.0], [0.0, 1.0]])
    Q = q * np.array([[0.25, 0.5], [0.5, 1.0]])  # white acceleration, one frame

    first = int(np.argmax(observed))
    x = np.stack([values[first], np.zeros(values.shape[1])])  # (2, D): position and velocity rows
    P = np.diag([r, (0.05 * size) ** 2])
    xs_pred, Ps_pred, xs, Ps = [], [], [], []
    for i in range(n):
        if i > 0:
            x = F @ x
            P = F @ P @ F.T + Q
        xs_pred.append(x)
        Ps_pred.append(P)
        if observed[i]:
            gain = P[:, 0] / (P[0, 0] + r)  # H = [1, 0]
            x = x + np.outer(gain, values[i] - x[0])
            P = P - np.outer(gain, P[0])
        xs.append(x)
        Ps.append(P)
    smoothed = xs[-1]
    out = np.empty_like(values)
    out[-1] = smoothed[0]
    for i in range(n - 2, -1, -1):
        gain = Ps[i] @ F.T @ np.linalg.inv(Ps_pred[i + 1])
        smoothed = xs[i] + gain @ (smoothed - xs_pred[i + 1])
        out[i] = smoothed[0]
    return out.astype(np.float32)


def _interpolate(values: np.ndarray, observed: np.ndarray) -> np.ndarray:
    if observed.all():
        return values.copy()
    idx = np.nonzero(observed)[0]
    if len(idx) == 0:
        return values.copy()
    positions = np.arange(len(values))
    return np.stack([np.interp(positions, idx, values[idx, d]) for d in range(values.shape[1])], 1)
