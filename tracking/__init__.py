"""Faces over time: detection, embeddings, Kalman tracking, shot cuts, landmark smoothing."""
