"""Using a trained model: thresholds and calibration, verification, open-set search, pair lists, batched detection.

Everything here sits below the commands (``calibrate``, ``verify``, ``search``,
``pairs``, ``eval folder --open-set``) and above the core (models, face
preparation in ``inference.embedding``, search in ``inference.search``).
"""
