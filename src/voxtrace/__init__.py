"""voxtrace: attribute a speech clip to the generator that produced it, and detect synthetic speech."""

__version__ = "0.1.0"
