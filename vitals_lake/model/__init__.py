"""The anomaly model at serving time: the signed artifact, per-patient baseline features, the detector
classes an artifact may hold, and the stream scorer with its alert state. Training lives in ``ml/``."""
