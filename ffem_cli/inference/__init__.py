"""Using a trained model, for ``eval``, ``export``, ``embed``, ``search``, ``map``, ``calibrate``, ``verify`` and ``pairs``.

``models`` loads a run, a ``.keras`` file or an export; ``embedding`` prepares
faces (``FacePrep``) and embeds them (batched, cached); ``search`` is the
chunked top-k and ``exact_index`` the build-once index for single queries; ``gallery``, ``facemap`` and ``projector`` write and read
galleries and draw them; ``thresholds``, ``calibration``, ``verify``,
``openset``, ``pairs``, ``labelled`` and ``detection`` build on those.
"""
