"""The web app: upload or record a clip, see the attributed generator, every class's probability and why."""

from voxtrace.serve.app import create_app

__all__ = ["create_app"]
