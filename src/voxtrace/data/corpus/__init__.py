"""The demo attribution corpus: real speech engines and real human recordings, built offline.

`build_demo_corpus(out)` writes the SP Cup 2022 style layout described in `voxtrace.data.corpus.build`.
"""

from voxtrace.data.corpus.build import build_demo_corpus, plan_corpus

__all__ = ["build_demo_corpus", "plan_corpus"]
