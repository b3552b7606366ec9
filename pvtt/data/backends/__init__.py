"""Model-backed implementations of stage backends (heavy imports stay inside them).

Each module registers itself in its stage's registry (``masks.BACKENDS``,
``backgrounds.BACKENDS``, ``synth.ROUTES``) and loads its weights from local paths under
``models/`` named in params; nothing is downloaded. A chosen backend that cannot run raises
:class:`BackendError` naming the missing path, its params key and ``dvc pull models/<dir>``.
"""


class BackendError(RuntimeError):
    """A chosen backend cannot run (weights or package missing); stops the stage."""
