"""Build the demo attribution corpus: plan every clip deterministically, render the missing ones in parallel.

Layout of `OUT` (SP Cup 2022 style, class ids as in `voxtrace.config.ATTRIBUTION_CLASSES`):

    OUT/train/*.wav + OUT/train/labels.csv          track,algorithm
    OUT/eval_part1/*.wav + OUT/labels_eval_part1.csv  held-out voices and speakers, clean
    OUT/eval_part2/*.wav + OUT/labels_eval_part2.csv  held-out voices through held-out channel families
    OUT/eval_part3/*.wav + OUT/labels_eval_part3.csv  held-out generators as `unknown`, clean
    OUT/eval_part4/*.wav + OUT/labels_eval_part4.csv  cross-corpus: made apart from the rest (`cross`), clean
    OUT/eval_part5/*.wav + OUT/labels_eval_part5.csv  cross-corpus through held-out channel families
    OUT/metadata.csv                                 everything known about every clip

Each evaluation part holds one axis out of training entirely (see `HELD_OUT_AXES`); no sentence, human speaker
or held-out voice is in two splits, and the channel families and `unknown` generators are split between
training and the parts that test them (`voxtrace.data.perturb`, `voxtrace.data.corpus.vocoders`).
    OUT/README.md                                    how it was made
    OUT/.build/                                      the plan and one finished-clip record per clip

The plan depends only on (per_class, eval_per_class, seed) and that of the cross-corpus parts
(`voxtrace.data.corpus.cross`) only on (cross_per_class, seed), so an interrupted build re-run with the same
arguments renders only the clips that are missing. Each clip is written atomically; labels and metadata
are written at the end, atomically.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soxr
from tqdm.auto import tqdm

from voxtrace.config import ATTRIBUTION_CLASSES, DETECTION_CLASSES
from voxtrace.data.audio import load_audio, normalize_loudness, save_wav, trim_silence
from voxtrace.data.corpus.engines import (
    CLASS_VOICES,
    HUMAN_CLASS,
    SynthesisError,
    Voice,
    human_speakers,
    missing_programs,
    seed_piper,
    synthesize,
    synthesize_festival_batch,
)
from voxtrace.data.corpus.readme import README_TEMPLATE
from voxtrace.data.corpus.sentences import sentence_list
from voxtrace.data.corpus.vocoders import HELD_OUT_VOCODERS, TRAIN_VOCODERS, VOCODER_PACKAGES, VOCODERS, available_vocoders
from voxtrace.data.perturb import HELD_OUT_CODECS, HELD_OUT_IMPAIRMENTS, TRAIN_CODECS, TRAIN_ROOMS, apply_channels
from voxtrace.io import atomic_write_csv, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_S, MAX_S = 2.0, 6.0
BUILDER_SPLITS = ("train", "eval_part1", "eval_part2", "eval_part3")  # planned here
CROSS_PARTS = ("eval_part4", "eval_part5")  # planned and finished apart, by `voxtrace.data.corpus.cross`
SPLITS = BUILDER_SPLITS + CROSS_PARTS
EVAL_PARTS = SPLITS[1:]
HELD_OUT_AXES = {  # what each evaluation part holds out of training
    "eval_part1": "voices: known-generator voices and human speakers never in train; clean",
    "eval_part2": "channels: the voices of part 1 through channel families no training clip went through",
    "eval_part3": "generators: `unknown` from vocoders never in train and unseen human speakers; clean",
    "eval_part4": "cross-corpus: made apart from train (other texts, rendering settings, levels, silences and "
                  "lengths), held-out voices, speakers never in train, `unknown` from every vocoder; clean",
    "eval_part5": "cross-corpus channels: clips made like part 4 through channel families no training clip went "
                  "through",
}
SENTENCE_SHARE = {"train": 0.55, "eval_part1": 0.15, "eval_part2": 0.15, "eval_part3": 0.15}
# human speakers of a package family, in turn
SPEAKER_PATTERN = ("train", "eval_part1", "eval_part2", "eval_part3", "train", "train", "train")
# festival clips spoken by one festival process: the voice loads once per batch (a clip against batches of 8:
# diphone voices 0.08 -> 0.05 s, HTS 0.27 -> 0.24 s); the audio does not depend on the batch
FESTIVAL_BATCH = 32
PIPER_BATCH = 24  # Piper clips rendered in order by one freshly seeded session (engines.seed_piper)
BATCHED_ENGINES = {"festival": FESTIVAL_BATCH, "piper": PIPER_BATCH}
SPARE_TEXTS = 4  # sentences of the same split a clip falls back on when its engine cannot speak one
VOCODED_EVERY = 2  # every 2nd "unknown" clip is a vocoder's resynthesis of a human segment
# Channel parity in train/: every class meets the same channels. A quarter of the human recordings come
# narrowband (phone prompts, game voices); NARROWBAND_SHARE of the synthetic clips go through a narrowband line
# so that, after every clip of every class went through a training codec (most of them narrowband) and a room
# or noise equally often, the narrowband share is alike across classes (the corpus README measures it).
NARROWBAND_SHARE = 0.15
NARROWBAND_LINES = ("telephone", "gsm", "resample")
TRAIN_CODEC_SHARE, TRAIN_ROOM_SHARE = 0.3, 0.2
HELD_OUT_IMPAIRMENT_SHARE = 0.6  # eval_part2: every clip gets a held-out codec, this share also an impairment
LABEL_FILES = {"train": "train/labels.csv", **{part: f"labels_{part}.csv" for part in EVAL_PARTS}}
TASKS = {"attribute": ATTRIBUTION_CLASSES, "detect": DETECTION_CLASSES}


@dataclass
class ClipJob:
    """Everything needed to render one clip, independent of any other clip."""

    track: str
    split: str
    class_id: int
    engine: str  # espeak | flite | festival | piper | human | a vocoder of `vocoders.VOCODERS`
    voice: str
    speaker: str
    seed: int
    text_ids: list[int] = field(default_factory=list)  # synthetic: the sentence, then spares (see SPARE_TEXTS)
    rate: float = 1.0
    pitch: int = 50
    pieces: list = field(default_factory=list)  # human: [path, offset_s, duration_s] in order, spares last
    target_s: float = MIN_S  # human: stop adding pieces once this long
    channels: list[str] = field(default_factory=list)  # channel families applied in order (perturb.CHANNEL_FAMILIES)

    @property
    def class_name(self) -> str:
        return ATTRIBUTION_CLASSES[self.class_id]


# ---- planning -----------------------------------------------------------------------------------------------
def plan_corpus(per_class: int = 240, eval_per_class: int = 60, seed: int = 0, speakers: dict | None = None):
    """Every clip of the corpus as a `ClipJob`, in a fixed order for fixed arguments.

    `speakers` ({speaker: [(path, seconds), ...]}) defaults to the recordings of the installed Debian
    packages (`engines.human_speakers`), so the plan also depends on which of them are installed.
    """
    if per_class < 1 or eval_per_class < 1:
        raise ValueError(f"per_class and eval_per_class must be >= 1. Received: {per_class}, {eval_per_class}")
    rng = np.random.default_rng(seed)
    counts = {split: per_class if split == "train" else eval_per_class for split in SPLITS}
    sentence_pools = _split_sentences(rng)
    speakers = human_speakers() if speakers is None else speakers
    speaker_split = _split_speakers(speakers, rng)
    vocoders = _installed_vocoders()
    jobs = []
    for split in BUILDER_SPLITS:
        split_jobs = []
        for class_id, class_name in enumerate(ATTRIBUTION_CLASSES):
            if class_name == HUMAN_CLASS:
                split_speakers = {s: speakers[s] for s in speakers if speaker_split[s] == split}
                split_jobs += _plan_human(split, class_id, counts[split], split_speakers, vocoders[split], rng)
            else:
                split_jobs += _plan_synthetic(split, class_id, counts[split], sentence_pools[split], rng)
        for job in split_jobs:
            job.channels = _plan_channels(job, rng)
        order = rng.permutation(len(split_jobs))
        names: set[str] = {Path(j.track).stem for j in jobs}
        for index in order:
            job = split_jobs[index]
            name = rng.bytes(16).hex()
            while name in names:
                name = rng.bytes(16).hex()
            names.add(name)
            job.track = f"{name}.wav"
            jobs.append(job)
    return jobs


def _split_sentences(rng) -> dict[str, list[int]]:
    ids = rng.permutation(len(sentence_list()))
    pools, start = {}, 0
    for split in BUILDER_SPLITS:
        end = len(ids) if split == BUILDER_SPLITS[-1] else start + int(len(ids) * SENTENCE_SHARE[split])
        pools[split], start = ids[start:end].tolist(), end
    return pools


def speaker_splits(seed: int, speakers: dict) -> dict[str, str]:
    """The split `plan_corpus(..., seed=seed, speakers=speakers)` gives each human speaker, whatever the counts."""
    rng = np.random.default_rng(seed)
    _split_sentences(rng)
    return _split_speakers(speakers, rng)


def _installed_vocoders() -> dict[str, list[str]]:
    """The vocoders each split's `unknown` clips use: training ones, and held-out ones for eval_part3 only.

    A held-out vocoder this machine cannot run is left out with a warning naming its package.
    """
    held_out = available_vocoders(HELD_OUT_VOCODERS)
    for name in sorted(set(HELD_OUT_VOCODERS) - set(held_out)):
        log.warning("vocoder %s is not available (install %s); eval_part3 uses %s", name, VOCODER_PACKAGES[name],
                    held_out or "human speech only")
    train = list(TRAIN_VOCODERS)
    return {"train": train, "eval_part1": train, "eval_part2": train, "eval_part3": held_out}


def _plan_channels(job: ClipJob, rng) -> list[str]:
    """The channel families a clip goes through: parity chains in train/, held-out families in eval_part2."""
    chain = []
    if job.split == "train":
        if job.class_name != HUMAN_CLASS and rng.random() < NARROWBAND_SHARE:
            chain.append(str(rng.choice(NARROWBAND_LINES)))
        if rng.random() < TRAIN_ROOM_SHARE:
            chain.insert(0, str(rng.choice(TRAIN_ROOMS)))
        if rng.random() < TRAIN_CODEC_SHARE:
            chain.append(str(rng.choice(TRAIN_CODECS)))
    elif job.split == "eval_part2":
        if rng.random() < HELD_OUT_IMPAIRMENT_SHARE:
            chain.append(str(rng.choice(HELD_OUT_IMPAIRMENTS)))
        chain.append(str(rng.choice(HELD_OUT_CODECS)))
    return chain


def _split_speakers(speakers: dict, rng) -> dict[str, str]:
    """Human speakers to splits: within each package family, in turn as SPEAKER_PATTERN says."""
    families: dict[str, list[str]] = {}
    for speaker in sorted(speakers):
        families.setdefault(speaker.split("/")[0], []).append(speaker)
    assignment = {}
    for family in sorted(families):
        members = families[family]
        for turn, index in enumerate(rng.permutation(len(members))):
            assignment[members[index]] = SPEAKER_PATTERN[turn % len(SPEAKER_PATTERN)]
    return assignment


def _clip_seed(rng) -> int:
    return int(rng.integers(2**31 - 1))


def _plan_synthetic(split, class_id, count, pool, rng) -> list[ClipJob]:
    voices = CLASS_VOICES[ATTRIBUTION_CLASSES[class_id]]
    seen = [v for v in voices if not v.held_out]
    held = [v for v in voices if v.held_out]
    texts = rng.permutation(pool)
    jobs = []
    for i in range(count):
        # the evaluation parts alternate held-out and training voices; train never sees a held-out one
        choices = held if split != "train" and held and i % 2 == 0 else seen
        voice: Voice = choices[int(rng.integers(len(choices)))]
        jobs.append(ClipJob(
            track="", split=split, class_id=class_id, engine=voice.engine, voice=voice.name, speaker=voice.speaker,
            seed=_clip_seed(rng), text_ids=[int(texts[(i + k) % len(texts)]) for k in range(1 + SPARE_TEXTS)],
            rate=round(float(rng.uniform(0.88, 1.12)), 3), pitch=int(rng.integers(35, 66)),
        ))
    return jobs


def _plan_human(split, class_id, count, speakers: dict, vocoders: list[str], rng) -> list[ClipJob]:
    """`unknown` clips: human segments, every VOCODED_EVERY-th resynthesised by one of `vocoders` in turn."""
    if not speakers:
        raise RuntimeError(f"no human speech recordings for {split}; run scripts/install_system_deps.sh")
    queues = {s: _segments(speakers[s], rng) for s in rng.permutation(sorted(speakers)).tolist()}
    queues = {s: q for s, q in queues.items() if q}
    if not queues:
        raise RuntimeError(f"the human speakers of {split} ({sorted(speakers)}) have no recording of 2 s or more")
    order, taken = [], {s: 0 for s in queues}
    while len(order) < count:  # round robin over speakers so every speaker contributes
        for speaker, queue in queues.items():
            if len(order) < count:
                order.append((speaker, queue[taken[speaker] % len(queue)]))
                taken[speaker] += 1
    jobs = []
    for i, (speaker, (pieces, target)) in enumerate(order):
        vocoder = vocoders[(i // VOCODED_EVERY) % len(vocoders)] if vocoders and i % VOCODED_EVERY else None
        jobs.append(ClipJob(
            track="", split=split, class_id=class_id, engine=vocoder or "human",
            voice=vocoder or speaker.split("/")[0], speaker=speaker, seed=_clip_seed(rng),
            pieces=pieces, target_s=target,
        ))
    return jobs


def _segments(files, rng, gap_s: float = 0.25) -> list[tuple[list, float]]:
    """Cut a speaker's recordings into 2-6 s segments: long ones are cut, short ones are joined in turn.

    Each segment is (pieces, target_s); pieces of the following segments (about 8 s of recordings) are
    appended as spares, used only if silence trimming leaves the segment shorter than its target.
    """
    segments, current, length = [], [], 0.0
    target = rng.uniform(3.0, 5.5)
    for index in rng.permutation(len(files)):
        path, duration = files[index]
        if duration > MAX_S:
            offset = 0.0
            while duration - offset >= MIN_S + 0.5:
                piece = min(float(rng.uniform(3.0, 5.5)), duration - offset)
                segments.append([[path, round(offset, 3), round(piece, 3)]])
                offset += piece
            continue
        current.append([path, 0.0, round(duration, 3)])
        length += duration + gap_s
        if length >= target:
            segments.append(current)
            current, length, target = [], 0.0, rng.uniform(3.0, 5.5)
    out = []
    for i, pieces in enumerate(segments):
        spares = []
        for later in segments[i + 1:] + segments[:i]:
            if sum(p[2] for p in spares) >= 8.0:
                break
            spares += later
        raw = sum(p[2] for p in pieces)
        out.append((pieces + spares, round(min(MAX_S, max(MIN_S, 0.8 * raw)), 3)))
    return out


# ---- rendering ----------------------------------------------------------------------------------------------
def render_clip(job: ClipJob, out: Path, spoken: dict | None = None) -> dict:
    """Render one clip to `out/<split>/<track>` and its record to `out/.build/<track>.json`; returns the record.

    `spoken` may hold engine output already synthesised for this clip: {(text_id, rate): (waveform, rate)}.
    """
    rng = np.random.default_rng(job.seed)
    voice = job.voice
    if job.engine == "human" or job.engine in VOCODERS:
        x = _human_segment(job, rng)
        if job.engine in VOCODERS:
            x, voice = VOCODERS[job.engine](x, rng, SAMPLE_RATE)
        text_id, replaced = "", ""
    else:
        x, used, failed = _synthetic_clip(job, spoken or {})
        text_id, replaced = "+".join(str(t) for t in used), "+".join(str(t) for t in failed)
    return save_clip(job, normalize_loudness(_fit_length(x)), rng, out, voice, text_id, replaced)


def save_clip(job, x: np.ndarray, rng, out: Path, voice: str, text_id: str, replaced: str) -> dict:
    """Put a finished clip through its channels, write it to `out/<split>/<track>` and its record to
    `out/.build/<track>.json`; returns the record (the builder's and the cross-corpus parts' alike)."""
    x, applied = apply_channels(x, job.channels, rng, SAMPLE_RATE)
    save_wav(out / job.split / job.track, x, SAMPLE_RATE)
    record = {
        "track": job.track, "split": job.split, "class_id": job.class_id, "class_name": job.class_name,
        "engine": job.engine, "voice": voice, "speaker": job.speaker, "text_id": text_id, "replaced": replaced,
        "perturbations": "+".join(applied), "narrowband": int(is_narrowband(x, SAMPLE_RATE)),
        "duration": round(len(x) / SAMPLE_RATE, 3),
    }
    atomic_write_json(out / ".build" / f"{Path(job.track).stem}.json", record)
    return record


def _synthetic_clip(job: ClipJob, spoken: dict) -> tuple[np.ndarray, list[int], list[int]]:
    """Speak the clip's sentences in turn until it is MIN_S long; a sentence the engine cannot speak is
    replaced by the next spare. Returns (waveform, text ids used, text ids the engine failed on)."""
    voice = Voice(job.engine, job.voice)
    parts, used, failed, errors = [], [], [], []
    for text_id in job.text_ids:
        try:
            x, rate = spoken.get((text_id, job.rate)) or synthesize(
                voice, sentence_list()[text_id], rate=job.rate, pitch=job.pitch
            )
        except SynthesisError as err:
            failed.append(text_id)
            errors.append(str(err))
            continue
        if rate != SAMPLE_RATE:
            x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        parts.append(trim_silence(x, SAMPLE_RATE))
        used.append(text_id)
        if sum(len(p) for p in parts) + int(0.3 * SAMPLE_RATE) * (len(parts) - 1) >= MIN_S * SAMPLE_RATE:
            break
    if not parts:
        raise SynthesisError(f"{job.speaker} could not speak any of {len(failed)} sentences; last: {errors[-1]}")
    pause = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    joined = np.concatenate([p if i == 0 else np.concatenate([pause, p]) for i, p in enumerate(parts)])
    if len(joined) < MIN_S * SAMPLE_RATE:
        raise SynthesisError(f"{job.speaker} gave only {len(joined) / SAMPLE_RATE:.2f} s for texts {job.text_ids}")
    return joined, used, failed


def _human_segment(job: ClipJob, rng) -> np.ndarray:
    """Join the trimmed pieces with short, very quiet pauses until the segment reaches its target length."""
    parts, length = [], 0
    for path, offset, duration in job.pieces:
        piece = trim_silence(load_audio(path, SAMPLE_RATE, offset=offset, duration=duration), SAMPLE_RATE)
        if len(piece) < 0.1 * SAMPLE_RATE:
            continue
        if parts:
            pause = rng.standard_normal(int(rng.uniform(0.15, 0.35) * SAMPLE_RATE)).astype(np.float32) * 1e-4
            parts.append(pause)
        parts.append(normalize_loudness(piece))
        length = sum(len(p) for p in parts)
        if length >= job.target_s * SAMPLE_RATE:
            break
    if length < MIN_S * SAMPLE_RATE:
        raise RuntimeError(f"{job.speaker}: the recordings {[p[0] for p in job.pieces]} give less than {MIN_S} s")
    return np.concatenate(parts)


def is_narrowband(x: np.ndarray, sample_rate: int, cutoff_hz: float = 4000.0, floor_db: float = -30.0) -> bool:
    """True when the clip has almost no energy above `cutoff_hz` (under `floor_db` of its total)."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    total = float(power.sum())
    return total > 0 and float(power[freqs >= cutoff_hz].sum()) < total * 10 ** (floor_db / 10)


def _fit_length(x: np.ndarray) -> np.ndarray:
    """Cut clips longer than MAX_S at the quietest 20 ms frame of their last 1.5 s, with a 10 ms fade-out."""
    limit = int(MAX_S * SAMPLE_RATE)
    if len(x) <= limit:
        return x
    frame = int(0.02 * SAMPLE_RATE)
    start = int((MAX_S - 1.5) * SAMPLE_RATE)
    window = x[start:limit][: (limit - start) // frame * frame].reshape(-1, frame)
    cut = start + int(np.argmin(np.square(window).mean(axis=1))) * frame + frame // 2
    y = x[:cut].copy()
    fade = min(len(y), int(0.01 * SAMPLE_RATE))
    y[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return y


def _render_batch(batch: list[ClipJob], out: Path) -> list[tuple[str, str]]:
    """Render clips of one voice; returns (speaker, error line) per failed clip (the others are kept)."""
    spoken = {}
    if batch[0].engine == "festival":
        items = [(job.text_ids[0], job.rate) for job in batch]
        voice = Voice(batch[0].engine, batch[0].voice)
        audio = synthesize_festival_batch(voice, [(sentence_list()[t], r) for t, r in items])
        spoken = {item: result for item, result in zip(items, audio) if result is not None}
    return render_each(batch, out, spoken, render_clip)


def render_each(batch: list, out: Path, spoken: dict, render) -> list[tuple[str, str]]:
    """`render(job, out, spoken)` for every clip of a batch, in order; returns (speaker, error line) per failed
    clip. A batch of Piper clips starts a session seeded by its first clip, so its audio depends on the batch
    alone, not on what the worker process rendered before."""
    if batch and batch[0].engine == "piper":
        seed_piper(batch[0].seed)
    errors = []
    for job in batch:
        try:
            render(job, out, spoken)
        except Exception as err:  # one failing clip must not stop the others; it is reported and retried on re-run
            errors.append((job.speaker, f"{job.split}/{job.track} ({job.speaker}): {type(err).__name__}: {err}"))
    return errors


def _batches(jobs: list[ClipJob]) -> list[list[ClipJob]]:
    """One clip per work unit, except the clips of `BATCHED_ENGINES`, grouped by voice in plan order into runs of
    the engine's batch size. Made from the whole plan, so a clip is always rendered in the same batch."""
    units, open_groups = [], {}
    for job in jobs:
        size = BATCHED_ENGINES.get(job.engine)
        if size is None:
            units.append([job])
            continue
        group = open_groups.setdefault((job.engine, job.voice), [])
        group.append(job)
        if len(group) == size:
            units.append(open_groups.pop((job.engine, job.voice)))
    return units + list(open_groups.values())


# ---- the build ------------------------------------------------------------------------------------------------
def build_demo_corpus(
    out: str | os.PathLike = "data/demo",
    per_class: int = 240,
    eval_per_class: int = 60,
    seed: int = 0,
    task: str = "attribute",
    jobs: int | None = None,
    cross_per_class: int = 30,
) -> Path:
    """Build (or finish building) the demo corpus in `out` and return its path.

    Args:
        out: the corpus folder.
        per_class: training clips per class.
        eval_per_class: clips per class in each evaluation part.
        seed: fixes the plan: sentences and speakers per split, voices, prosody, track names, perturbations.
        task: "attribute" writes class ids of `ATTRIBUTION_CLASSES`, "detect" of `DETECTION_CLASSES`
            (0 bona fide human speech, 1 everything synthetic, Griffin-Lim included). The audio is the same.
        jobs: worker processes (default: all CPU cores).
        cross_per_class: clips per class in each cross-corpus part (`voxtrace.data.corpus.cross`).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}. Received: task={task!r}")
    missing = missing_programs()
    if missing:
        raise RuntimeError(f"speech engines not installed: {missing}; run scripts/install_system_deps.sh")
    out = Path(out)
    started = time.time()
    settings = {"per_class": per_class, "eval_per_class": eval_per_class, "seed": seed,
                "cross_per_class": cross_per_class}
    plan = corpus_plan(per_class, eval_per_class, seed, cross_per_class)
    _check_settings(out, settings)
    for path in list(out.glob("*/.*.partial.*")) + list(out.glob(".build/.*.partial.*")):
        path.unlink()  # left behind by an interrupted build
    units = work_units(plan, out)
    failures = _render_all(units, out, jobs or os.cpu_count() or 1)
    if failures:
        raise RuntimeError(_failure_report(failures, plan))
    records = pd.DataFrame([json.loads((out / ".build" / f"{Path(j.track).stem}.json").read_text()) for j in plan])
    _write_tables(out, records, task)
    rendered = sum(len(unit) for _, unit in units)
    atomic_write_text(out / "README.md", _readme(records, settings, task, time.time() - started, rendered))
    return out


def corpus_plan(per_class: int, eval_per_class: int, seed: int, cross_per_class: int) -> list:
    """Every clip of the corpus: the builder's splits (`plan_corpus`) and the cross-corpus parts."""
    from voxtrace.data.corpus import cross  # it builds on this module

    plan = plan_corpus(per_class, eval_per_class, seed)
    return plan + cross.plan_cross(cross_per_class, seed, taken={Path(job.track).stem for job in plan})


def work_units(plan: list, out: Path) -> list[tuple]:
    """`(render function, batch)` for every batch of the plan (`_batches`) with a clip missing from `out`.

    A batch is rendered whole: its finished clips come out the same, and its Piper clips are spoken in the same
    order by the same seeded session as in an uninterrupted build."""
    from voxtrace.data.corpus import cross  # it builds on this module

    missing = {job.track for job in plan if not _finished(out, job)}
    units = [(_render_batch, unit) for unit in _batches([job for job in plan if job.split in BUILDER_SPLITS])]
    units += [(cross.render_batch, unit) for unit in _batches([job for job in plan if job.split in CROSS_PARTS])]
    return [(render, unit) for render, unit in units if any(job.track in missing for job in unit)]


def _failure_report(failures: list[tuple[str, str]], plan: list[ClipJob]) -> str:
    """One paragraph per voice whose clips failed even with spare sentences: the voice and what provides it."""
    by_speaker: dict[str, list[str]] = {}
    for speaker, line in failures:
        by_speaker.setdefault(speaker, []).append(line)
    packages = {v.speaker: v.package for voices in CLASS_VOICES.values() for v in voices}
    lines = [f"{len(failures)} of {len(plan)} clips failed; every other clip is kept, re-run to retry the failed ones."]
    for speaker, errors in sorted(by_speaker.items()):
        provider = packages.get(speaker, "scripts/install_system_deps.sh")
        lines.append(f"- {speaker} (provided by {provider}) failed on {len(errors)} clips: {errors[0]}")
    return "\n".join(lines)


def _check_settings(out: Path, settings: dict) -> None:
    """Refuse to finish a corpus begun with other settings; one begun before a setting existed takes it."""
    record = out / ".build" / "settings.json"
    if record.is_file():
        previous = json.loads(record.read_text())
        if {**settings, **previous} != settings:
            raise ValueError(
                f"{out} holds a corpus built with {previous}; it cannot be finished with {settings}. "
                f"Use the same arguments, another --out, or delete {out}."
            )
    atomic_write_json(record, settings)


def _finished(out: Path, job) -> bool:
    return (out / job.split / job.track).is_file() and (out / ".build" / f"{Path(job.track).stem}.json").is_file()


def _render_all(units: list[tuple], out: Path, workers: int) -> list[tuple[str, str]]:
    """Render (function, batch of clips) units in `workers` processes; returns the failures.

    The largest batches go first and single clips last, so no worker is left alone with a long batch at the end
    (every unit's audio depends on the unit alone, not on when it is rendered)."""
    units = sorted(units, key=lambda item: -len(item[1]))
    failures = []
    with tqdm(total=sum(len(unit) for _, unit in units), desc="corpus", unit="clip", dynamic_ncols=True) as progress:
        if workers <= 1:
            for render, unit in units:
                failures += render(unit, out)
                progress.update(len(unit))
        else:
            context = multiprocessing.get_context("spawn")  # safe even when the caller has TensorFlow loaded
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = {pool.submit(render, unit, out): len(unit) for render, unit in units}
                for future in concurrent.futures.as_completed(futures):
                    failures += future.result()
                    progress.update(futures[future])
    return failures


def _write_tables(out: Path, records: pd.DataFrame, task: str) -> None:
    records = records.copy()
    records["detect_id"] = (records["engine"] != "human").astype(int)
    records["detect_name"] = records["detect_id"].map(dict(enumerate(DETECTION_CLASSES)))
    records["voice_in_train"] = records["speaker"].isin(set(records.loc[records["split"] == "train", "speaker"]))
    column = "class_id" if task == "attribute" else "detect_id"
    for split in SPLITS:
        part = records[records["split"] == split].sort_values("track")
        labels = pd.DataFrame({"track": part["track"], "algorithm": part[column].astype(int)})
        atomic_write_csv(out / LABEL_FILES[split], labels)
        # the bona fide / spoof labels always stand beside, so one corpus serves both tasks
        detect = pd.DataFrame({"track": part["track"], "algorithm": part["detect_id"].astype(int)})
        atomic_write_csv(out / LABEL_FILES[split].replace(".csv", "_detect.csv"), detect)
    atomic_write_csv(out / "metadata.csv", records.sort_values(["split", "track"]))


def _readme(records: pd.DataFrame, settings: dict, task: str, seconds: float, rendered: int) -> str:
    table = _markdown(records.pivot_table(index="class_name", columns="split", values="track", aggfunc="count"), "{:d}")
    narrowband = _markdown(records.pivot_table(index="class_name", columns="split", values="narrowband",
                                               aggfunc="mean"), "{:.2f}")
    voices = records.groupby("split")["speaker"].unique()
    held_out = sorted(v.speaker for vs in CLASS_VOICES.values() for v in vs if v.held_out)
    humans = "\n".join(f"- {s}: " + ", ".join(sorted(x for x in voices.get(s, []) if "/" in x)) for s in SPLITS)
    class_voices = {f"voices_{c}": ", ".join(v.name + (" (held out)" if v.held_out else "") for v in vs)
                    for c, vs in CLASS_VOICES.items()}
    part3 = sorted(set(records.loc[records.split == "eval_part3", "engine"]) & set(HELD_OUT_VOCODERS))
    return README_TEMPLATE.format(**_cross_readme(records),
        table=table, narrowband=narrowband, held_out=", ".join(held_out), humans=humans,
        axes="\n".join(f"  - `{part}`: {axis}" for part, axis in HELD_OUT_AXES.items()),
        train_vocoders=", ".join(TRAIN_VOCODERS), held_out_vocoders=", ".join(part3) or "none installed",
        narrowband_lines=", ".join(NARROWBAND_LINES), train_rooms=", ".join(TRAIN_ROOMS),
        train_codecs=", ".join(TRAIN_CODECS), held_out_codecs=", ".join(HELD_OUT_CODECS),
        held_out_impairments=", ".join(HELD_OUT_IMPAIRMENTS), **class_voices,
        task=task,
        classes=", ".join(f"{i} {c}" for i, c in enumerate(TASKS[task])),
        settings=", ".join(f"{k}={v}" for k, v in settings.items()),
        minutes=seconds / 60,
        rendered=rendered,
        hours=records["duration"].sum() / 3600,
    )


def _cross_readme(records: pd.DataFrame) -> dict:
    """The README fields that describe the cross-corpus parts."""
    from voxtrace.data.corpus import cross

    span = lambda bounds: "-".join(str(b) for b in bounds)  # noqa: E731
    parts = records[records.split.isin(CROSS_PARTS)]
    voices = {c: ", ".join(f"{v.name} ({'in train' if not v.held_out else 'held out'})" for v in cross.cross_voices(c))
              for c in CLASS_VOICES}
    return {
        "cross_sentences": len(cross.prose_sentences()), "text_package": cross.TEXT_PACKAGE,
        "words": span((cross.MIN_WORDS, cross.MAX_WORDS)), "join_share": cross.JOIN_SHARE,
        "rate": span(cross.RATE), "pitch": span(cross.PITCH), "word_gap": span(cross.WORD_GAP),
        "amplitude": span(cross.AMPLITUDE), "noise_scale": span(cross.NOISE_SCALE), "noise_w": span(cross.NOISE_W),
        "span_db": cross.SPAN_TOP_DB, "edge": span(cross.EDGE_S), "min_s": cross.MIN_S, "max_s": cross.MAX_S,
        "level": " to ".join(f"{b:.0f}" for b in cross.LEVEL_DBFS), "impairment_share": cross.IMPAIRMENT_SHARE,
        "cross_voices": "; ".join(f"{c}: {v}" for c, v in voices.items()),
        "cross_vocoders": ", ".join(sorted(set(parts.engine) & set(VOCODERS))) or "none installed",
    }


def _markdown(pivot: pd.DataFrame, fmt: str) -> str:
    """A class x split pivot as a Markdown table, classes and splits in their usual order."""
    pivot = pivot.reindex(index=ATTRIBUTION_CLASSES, columns=list(SPLITS)).fillna(0)
    rows = [f"| {c} | " + " | ".join(fmt.format(int(v) if fmt == "{:d}" else v) for v in pivot.loc[c]) + " |"
            for c in pivot.index]
    return "\n".join(["| class | " + " | ".join(SPLITS) + " |", "|---|" + "---|" * len(SPLITS)] + rows)


def plan_summary(plan: list[ClipJob]) -> pd.DataFrame:
    """The plan as a table (one row per clip), for inspection and tests."""
    return pd.DataFrame([{**asdict(job), "class_name": job.class_name} for job in plan])
