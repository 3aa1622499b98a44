"""Model loading (`loader`) and the offline tiny-model factory (`tiny`)."""


class ModelNotFoundError(FileNotFoundError):
    """A model id or directory that cannot be loaded here; the message says how to get it."""
