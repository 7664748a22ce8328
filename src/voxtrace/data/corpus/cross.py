"""The cross-corpus evaluation parts: clips planned and finished apart from the rest of the corpus.

A model can lean on the habits of the corpus builder (its sentence list, prosody ranges, loudness
normalisation, silence trimming and clip lengths) and still score well on parts made the same way. These
parts share only the engines, the human recordings, the vocoders and the channel families with the builder:

- texts: English prose from the Debian package fortunes-min, cleaned to sentences of 4-30 words, none of
  them in `sentences.sentence_list()`; a clip speaks one sentence, or two joined (`JOIN_SHARE`);
- rendering: wider rate and pitch ranges, espeak word gaps and amplitudes, Piper's sampling noise drawn per clip;
- finishing: the speech span found at `SPAN_TOP_DB`, a random 0-0.6 s of the recording's own silence kept on
  either side, clips of 1.5-10 s (human speech cropped to a random length), peak-normalised to a random level;
- voices: the held-out voices of every class that has them (the others reuse their training voices), human
  speakers never in train; `unknown` is half human speech, half human speech resynthesised by every vocoder.

`eval_part4` is clean; `eval_part5` holds other draws of the same kind through the held-out channel families.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from voxtrace.config import ATTRIBUTION_CLASSES
from voxtrace.data.audio import load_audio
from voxtrace.data.corpus.build import CROSS_PARTS, SAMPLE_RATE, render_each, save_clip, speaker_splits
from voxtrace.data.corpus.engines import (
    CLASS_VOICES,
    HUMAN_CLASS,
    SynthesisError,
    Voice,
    human_speakers,
    synthesize,
    synthesize_festival_batch,
)
from voxtrace.data.corpus.sentences import sentence_list
from voxtrace.data.corpus.vocoders import HELD_OUT_VOCODERS, TRAIN_VOCODERS, VOCODERS, available_vocoders
from voxtrace.data.perturb import HELD_OUT_CODECS, HELD_OUT_IMPAIRMENTS

CHANNEL_PART = "eval_part5"
SEED_OFFSET = 104_729  # the cross plan draws from its own stream: the corpus seed plus this
TEXT_PACKAGE = "fortunes-min"
TEXT_FILES = tuple(f"/usr/share/games/fortunes/{name}" for name in ("fortunes", "literature", "riddles"))
MIN_WORDS, MAX_WORDS = 4, 30
MIN_S, MAX_S = 1.5, 10.0
RATE = (0.75, 1.3)
PITCH = (10, 90)  # espeak
WORD_GAP = (0, 8)  # espeak, 10 ms units
AMPLITUDE = (60, 180)  # espeak
NOISE_SCALE, NOISE_W = (0.3, 1.0), (0.3, 1.2)  # piper
JOIN_SHARE = 0.35  # clips that speak two sentences
SPARES = 4  # sentences a clip falls back on when its engine cannot speak one
LEVEL_DBFS = (-20.0, -1.0)  # peak level
EDGE_S = (0.0, 0.6)  # silence kept before and after the speech
SPAN_TOP_DB = 50.0  # the speech span: 10 ms frames within this many dB of the loudest
IMPAIRMENT_SHARE = 0.5  # eval_part5: every clip gets a held-out codec, this share also an impairment


@dataclass
class CrossJob:
    """One clip of a cross-corpus part, rendered independently of any other."""

    track: str
    split: str
    class_id: int
    engine: str  # espeak | flite | festival | piper | human | a vocoder of `vocoders.VOCODERS`
    voice: str
    speaker: str
    seed: int
    text_ids: list[int] = field(default_factory=list)  # into `prose_sentences()`: `join` sentences, then spares
    join: int = 1
    rate: float = 1.0
    pitch: int = 50
    options: dict = field(default_factory=dict)  # engine options of `engines.synthesize`
    pieces: list = field(default_factory=list)  # human: [path, offset_s, duration_s], joined in order
    length_s: float = MAX_S  # human: cropped to this long
    lead_s: float = 0.0
    trail_s: float = 0.0
    level_dbfs: float = -3.0
    channels: list[str] = field(default_factory=list)

    @property
    def class_name(self) -> str:
        return ATTRIBUTION_CLASSES[self.class_id]


@functools.lru_cache(maxsize=1)
def prose_sentences(files=TEXT_FILES) -> tuple[str, ...]:
    """Plain English sentences of the fortune files, in file order: ASCII, 4-30 words, none of the
    corpus's own sentence list. Attributions, verse layout, quotes and odd symbols are dropped."""
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise RuntimeError(f"{missing} not found: install {TEXT_PACKAGE} (scripts/install_system_deps.sh corpus)")
    own = set(sentence_list())
    out, seen = [], set()
    for path in files:
        for cookie in Path(path).read_text(encoding="latin-1").split("\n%\n"):
            body = " ".join(re.split(r"\n\s*--", cookie)[0].split()).replace('"', "").replace("--", ", ")
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", body):
                sentence = re.sub(r"^[QA]: ", "", sentence)  # riddles
                words = sentence.split()
                if (MIN_WORDS <= len(words) <= MAX_WORDS and sentence not in seen and sentence not in own
                        and re.fullmatch(r"[A-Z][A-Za-z0-9 ,;:'-]*[a-z][.!?]", sentence) and "- " not in sentence):
                    seen.add(sentence)
                    out.append(sentence)
    return tuple(out)


def cross_voices(class_name: str) -> list[Voice]:
    """The held-out voices of a class, or all its voices when it has none."""
    voices = CLASS_VOICES[class_name]
    return [v for v in voices if v.held_out] or voices


# ---- planning -----------------------------------------------------------------------------------------------
def plan_cross(per_class: int = 30, seed: int = 0, taken: set[str] = frozenset(), speakers: dict | None = None):
    """Every clip of the cross-corpus parts as a `CrossJob`, in a fixed order for fixed arguments.

    `taken` holds track names (without .wav) the rest of the corpus uses; `speakers` defaults to the installed
    human recordings, of which only speakers `build.speaker_splits(seed)` keeps out of train are used.
    """
    if per_class < 1:
        raise ValueError(f"cross_per_class must be >= 1. Received: {per_class}")
    rng = np.random.default_rng(seed + SEED_OFFSET)
    speakers = human_speakers() if speakers is None else speakers
    unseen = {s: speakers[s] for s, split in speaker_splits(seed, speakers).items() if split != "train"}
    vocoders = available_vocoders([*TRAIN_VOCODERS, *HELD_OUT_VOCODERS])
    texts = rng.permutation(len(prose_sentences())).tolist()
    pools = dict(zip(CROSS_PARTS, (texts[: len(texts) // 2], texts[len(texts) // 2:])))
    names, jobs = set(taken), []
    for split in CROSS_PARTS:
        part = []
        for class_id, class_name in enumerate(ATTRIBUTION_CLASSES):
            if class_name == HUMAN_CLASS:
                part += _plan_unknown(split, class_id, per_class, unseen, vocoders, rng)
            else:
                part += _plan_synthetic(split, class_id, per_class, pools[split], rng)
        for index in rng.permutation(len(part)):
            job = part[index]
            job.lead_s, job.trail_s = (round(float(v), 3) for v in rng.uniform(*EDGE_S, size=2))
            job.level_dbfs = round(float(rng.uniform(*LEVEL_DBFS)), 2)
            if split == CHANNEL_PART:
                job.channels = [str(rng.choice(HELD_OUT_IMPAIRMENTS))] if rng.random() < IMPAIRMENT_SHARE else []
                job.channels.append(str(rng.choice(HELD_OUT_CODECS)))
            name = rng.bytes(16).hex()
            while name in names:
                name = rng.bytes(16).hex()
            names.add(name)
            job.track = f"{name}.wav"
            jobs.append(job)
    return jobs


def _plan_synthetic(split, class_id, count, pool, rng) -> list[CrossJob]:
    voices = cross_voices(ATTRIBUTION_CLASSES[class_id])
    order = rng.permutation(pool)
    jobs = []
    for i in range(count):
        voice = voices[int(rng.integers(len(voices)))]
        join = 2 if rng.random() < JOIN_SHARE else 1
        start = int(rng.integers(len(order)))
        options = {}
        if voice.engine == "espeak":
            options = {"word_gap": int(rng.integers(WORD_GAP[0], WORD_GAP[1] + 1)),
                       "amplitude": int(rng.integers(AMPLITUDE[0], AMPLITUDE[1] + 1))}
        elif voice.engine == "piper":
            options = {"noise_scale": round(float(rng.uniform(*NOISE_SCALE)), 3),
                       "noise_w": round(float(rng.uniform(*NOISE_W)), 3)}
        jobs.append(CrossJob(
            track="", split=split, class_id=class_id, engine=voice.engine, voice=voice.name, speaker=voice.speaker,
            seed=int(rng.integers(2**31 - 1)), join=join, options=options,
            text_ids=[int(order[(start + k) % len(order)]) for k in range(join + SPARES)],
            rate=round(float(rng.uniform(*RATE)), 3), pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        ))
    return jobs


def _plan_unknown(split, class_id, count, speakers: dict, vocoders: list[str], rng) -> list[CrossJob]:
    """Human speech of random length from a random place in a speaker's recordings; every 2nd clip vocoded,
    by each of `vocoders` in turn."""
    if not speakers:
        raise RuntimeError("no human speaker outside train for the cross-corpus parts; run scripts/install_system_deps.sh")
    names = rng.permutation(sorted(speakers)).tolist()
    jobs = []
    for i in range(count):
        speaker = names[i % len(names)]
        files = speakers[speaker]
        length = round(float(rng.uniform(MIN_S, MAX_S)), 3)
        pieces, total, index = [], 0.0, int(rng.integers(len(files)))
        while total < length + 1.0 and len(pieces) < 4 * len(files):  # some of every recording is silence
            path, duration = files[index % len(files)]
            offset = float(rng.uniform(0, duration - length - 1.0)) if duration > length + 2.0 else 0.0
            take = min(duration - offset, length + 1.5 - total)
            pieces.append([path, round(offset, 3), round(take, 3)])
            total, index = total + take, index + 1
        vocoder = vocoders[(i // 2) % len(vocoders)] if vocoders and i % 2 else None
        jobs.append(CrossJob(
            track="", split=split, class_id=class_id, engine=vocoder or "human", voice=vocoder or speaker.split("/")[0],
            speaker=speaker, seed=int(rng.integers(2**31 - 1)), pieces=pieces, length_s=length,
        ))
    return jobs


# ---- rendering ----------------------------------------------------------------------------------------------
def render_clip(job: CrossJob, out: Path, spoken: dict | None = None) -> dict:
    """Render one clip to `out/<split>/<track>` and its record to `out/.build/<track>.json`; returns the record.

    `spoken` may hold engine output already synthesised for this clip: {(text_id, rate): (waveform, rate)}.
    """
    rng = np.random.default_rng(job.seed)
    voice, text_id, replaced = job.voice, "", ""
    if job.pieces:
        x = _finish(_enough_human_speech(job, rng), job, min(job.length_s, MAX_S - job.lead_s - job.trail_s))
        if job.engine in VOCODERS:
            x, voice = VOCODERS[job.engine](x, rng, SAMPLE_RATE)
    else:
        x, used, failed = _speak(job, spoken or {})
        x = _finish(x, job, MAX_S - job.lead_s - job.trail_s)
        text_id, replaced = "+".join(f"prose:{t}" for t in used), "+".join(f"prose:{t}" for t in failed)
    x = (x * (10 ** (job.level_dbfs / 20) / max(float(np.abs(x).max()), 1e-9))).astype(np.float32)
    return save_clip(job, x, rng, out, voice, text_id, replaced)


def _speak(job: CrossJob, spoken: dict) -> tuple[np.ndarray, list[int], list[int]]:
    """The engine's raw output for `job.join` sentences, more while under MIN_S of speech; a sentence the
    engine cannot speak is replaced by the next one. Returns (waveform, text ids used, text ids failed)."""
    voice = Voice(job.engine, job.voice)
    parts, used, failed, errors = [], [], [], []
    for text_id in job.text_ids:
        try:
            x, rate = spoken.get((text_id, job.rate)) or synthesize(
                voice, prose_sentences()[text_id], rate=job.rate, pitch=job.pitch, **job.options)
        except SynthesisError as err:
            failed.append(text_id)
            errors.append(str(err))
            continue
        parts.append(x if rate == SAMPLE_RATE else soxr.resample(x, rate, SAMPLE_RATE, quality="VHQ"))
        used.append(text_id)
        if len(used) >= job.join and np.diff(_span_bounds(np.concatenate(parts)))[0] >= MIN_S * SAMPLE_RATE:
            break
    if not parts:
        raise SynthesisError(f"{job.speaker} could not speak any of {len(failed)} sentences; last: {errors[-1]}")
    return np.concatenate(parts).astype(np.float32), used, failed


def _human_speech(job: CrossJob, rng) -> np.ndarray:
    """The pieces as recorded, joined by 0.05-0.5 s of digital silence."""
    parts = []
    for path, offset, duration in job.pieces:
        parts += [load_audio(path, SAMPLE_RATE, offset=offset, duration=duration, min_duration=0.0),
                  np.zeros(int(rng.uniform(0.05, 0.5) * SAMPLE_RATE), np.float32)]
    return np.concatenate(parts[:-1])


def _enough_human_speech(job: CrossJob, rng, passes: int = 8) -> np.ndarray:
    """`_human_speech`, its pieces read again (at most `passes` times) while the speech span is under MIN_S:
    a speaker whose recordings are short words still gives a clip."""
    x = _human_speech(job, rng)
    for _ in range(passes - 1):
        start, end = _span_bounds(x)
        if end - start >= MIN_S * SAMPLE_RATE:
            break
        x = np.concatenate([x, np.zeros(int(rng.uniform(0.05, 0.5) * SAMPLE_RATE), np.float32),
                            _human_speech(job, rng)])
    return x


def _span_bounds(x: np.ndarray) -> tuple[int, int]:
    """First and past-the-last sample of the 10 ms frames within SPAN_TOP_DB of the loudest frame."""
    frame = SAMPLE_RATE // 100
    energy = np.square(x[: len(x) // frame * frame].reshape(-1, frame), dtype=np.float64).mean(axis=1)
    if not energy.size or energy.max() == 0:
        return 0, 0
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-SPAN_TOP_DB / 10))
    return int(loud[0]) * frame, int(loud[-1] + 1) * frame


def _finish(x: np.ndarray, job: CrossJob, limit_s: float) -> np.ndarray:
    """The speech span cropped to `limit_s` (30 ms fade-out), with `job.lead_s` before it and `job.trail_s`
    after it of the recording's own audio (zeros where it has less, or where the speech was cropped)."""
    start, span_end = _span_bounds(x)
    end = min(span_end, start + int(limit_s * SAMPLE_RATE))
    lead, trail = int(job.lead_s * SAMPLE_RATE), int(job.trail_s * SAMPLE_RATE)
    if end - start + lead + trail < MIN_S * SAMPLE_RATE:
        raise SynthesisError(f"{job.speaker}: only {(end - start) / SAMPLE_RATE:.2f} s of speech")
    speech = x[start:end].copy()
    after = x[end: end + trail]
    if end < span_end:
        speech[-int(0.03 * SAMPLE_RATE):] *= np.linspace(1.0, 0.0, int(0.03 * SAMPLE_RATE), dtype=np.float32)
        after = after[:0]
    before = x[max(0, start - lead): start]
    return np.concatenate([np.zeros(lead - len(before), np.float32), before, speech, after,
                           np.zeros(trail - len(after), np.float32)])


def render_batch(batch: list[CrossJob], out: Path) -> list[tuple[str, str]]:
    """Render clips of one voice (festival's in one process); returns (speaker, error line) per failed clip."""
    spoken = {}
    if batch[0].engine == "festival":
        items = sorted({(t, job.rate) for job in batch for t in job.text_ids[: job.join]})
        audio = synthesize_festival_batch(Voice("festival", batch[0].voice),
                                          [(prose_sentences()[t], r) for t, r in items])
        spoken = {item: result for item, result in zip(items, audio) if result is not None}
    return render_each(batch, out, spoken, render_clip)
