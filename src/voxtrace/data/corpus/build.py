"""Build the demo attribution corpus: plan every clip deterministically, render the missing ones in parallel.

Layout of `OUT` (SP Cup 2022 style, class ids as in `voxtrace.config.ATTRIBUTION_CLASSES`):

    OUT/train/*.wav + OUT/train/labels.csv          track,algorithm
    OUT/eval_part1/*.wav + OUT/labels_eval_part1.csv  clean
    OUT/eval_part2/*.wav + OUT/labels_eval_part2.csv  1-3 of noise / reverb / MP3 per clip
    OUT/metadata.csv                                 everything known about every clip
    OUT/README.md                                    how it was made
    OUT/.build/                                      the plan and one finished-clip record per clip

The plan depends only on (per_class, eval_per_class, seed), so an interrupted build re-run with the same
arguments renders only the clips that are missing. Each clip is written atomically; labels and metadata
are written at the end, atomically.
"""

from __future__ import annotations

import concurrent.futures
import json
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
    synthesize,
    synthesize_festival_batch,
)
from voxtrace.data.corpus.readme import README_TEMPLATE
from voxtrace.data.corpus.sentences import sentence_list
from voxtrace.data.perturb import random_channel
from voxtrace.io import atomic_write_csv, atomic_write_json, atomic_write_text

SAMPLE_RATE = 16000
MIN_S, MAX_S = 2.0, 6.0
SPLITS = ("train", "eval_part1", "eval_part2")
SENTENCE_SHARE = {"train": 0.6, "eval_part1": 0.2, "eval_part2": 0.2}
SPEAKER_PATTERN = ("train", "eval_part1", "eval_part2", "train", "train")  # human speakers of a family, in turn
FESTIVAL_BATCH = 8  # festival clips rendered by one festival process
SPARE_TEXTS = 4  # sentences of the same split a clip falls back on when its engine cannot speak one
GRIFFIN_LIM_EVERY = 4  # every 4th "unknown" clip is Griffin-Lim resynthesis of a human segment
LABEL_FILES = {"train": "train/labels.csv", "eval_part1": "labels_eval_part1.csv",
               "eval_part2": "labels_eval_part2.csv"}
TASKS = {"attribute": ATTRIBUTION_CLASSES, "detect": DETECTION_CLASSES}


@dataclass
class ClipJob:
    """Everything needed to render one clip, independent of any other clip."""

    track: str
    split: str
    class_id: int
    engine: str  # espeak | flite | festival | piper | human | griffinlim
    voice: str
    speaker: str
    seed: int
    text_ids: list[int] = field(default_factory=list)  # synthetic: the sentence, then spares (see SPARE_TEXTS)
    rate: float = 1.0
    pitch: int = 50
    pieces: list = field(default_factory=list)  # human: [path, offset_s, duration_s] in order, spares last
    target_s: float = MIN_S  # human: stop adding pieces once this long

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
    counts = {"train": per_class, "eval_part1": eval_per_class, "eval_part2": eval_per_class}
    sentence_pools = _split_sentences(rng)
    speakers = human_speakers() if speakers is None else speakers
    speaker_split = _split_speakers(speakers, rng)
    jobs = []
    for split in SPLITS:
        split_jobs = []
        for class_id, class_name in enumerate(ATTRIBUTION_CLASSES):
            if class_name == HUMAN_CLASS:
                split_speakers = {s: speakers[s] for s in speakers if speaker_split[s] == split}
                split_jobs += _plan_human(split, class_id, counts[split], split_speakers, rng)
            else:
                split_jobs += _plan_synthetic(split, class_id, counts[split], sentence_pools[split], rng)
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
    cut1 = int(len(ids) * SENTENCE_SHARE["train"])
    cut2 = cut1 + int(len(ids) * SENTENCE_SHARE["eval_part1"])
    return {"train": ids[:cut1].tolist(), "eval_part1": ids[cut1:cut2].tolist(), "eval_part2": ids[cut2:].tolist()}


def _split_speakers(speakers: dict, rng) -> dict[str, str]:
    """Human speakers to splits: within each package family, in turn train, eval1, eval2, train, train."""
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


def _plan_human(split, class_id, count, speakers: dict, rng) -> list[ClipJob]:
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
        resynth = i % GRIFFIN_LIM_EVERY == GRIFFIN_LIM_EVERY - 1
        jobs.append(ClipJob(
            track="", split=split, class_id=class_id, engine="griffinlim" if resynth else "human",
            voice="griffinlim" if resynth else speaker.split("/")[0], speaker=speaker, seed=_clip_seed(rng),
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
    if job.engine in ("human", "griffinlim"):
        x = _human_segment(job, rng)
        if job.engine == "griffinlim":
            x, voice = _griffin_lim(x, rng)
        text_id, replaced = "", ""
    else:
        x, used, failed = _synthetic_clip(job, spoken or {})
        text_id, replaced = "+".join(str(t) for t in used), "+".join(str(t) for t in failed)
    x = normalize_loudness(_fit_length(x))
    applied: list[str] = []
    if job.split == "eval_part2":
        x, applied = random_channel(x, rng, SAMPLE_RATE)
    save_wav(out / job.split / job.track, x, SAMPLE_RATE)
    record = {
        "track": job.track, "split": job.split, "class_id": job.class_id, "class_name": job.class_name,
        "engine": job.engine, "voice": voice, "speaker": job.speaker, "text_id": text_id, "replaced": replaced,
        "perturbations": "+".join(applied), "duration": round(len(x) / SAMPLE_RATE, 3),
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


def _griffin_lim(x: np.ndarray, rng) -> tuple[np.ndarray, str]:
    """Resynthesise from the magnitude spectrogram alone: the phase is Griffin-Lim's estimate."""
    import librosa

    n_fft = int(rng.choice([512, 1024]))
    n_iter = int(rng.choice([16, 32, 64]))
    magnitude = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=n_fft // 4))
    y = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=n_fft // 4, n_fft=n_fft, length=len(x),
                           init="random", random_state=int(rng.integers(2**31 - 1)))
    return y.astype(np.float32), f"griffinlim(n_fft={n_fft},iter={n_iter})"


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
    errors = []
    for job in batch:
        try:
            render_clip(job, out, spoken)
        except Exception as err:  # one failing clip must not stop the others; it is reported and retried on re-run
            errors.append((job.speaker, f"{job.split}/{job.track} ({job.speaker}): {type(err).__name__}: {err}"))
    return errors


def _batches(todo: list[ClipJob]) -> list[list[ClipJob]]:
    """One clip per work unit, except festival clips, grouped by voice into runs of FESTIVAL_BATCH."""
    units, festival = [], {}
    for job in todo:
        if job.engine == "festival":
            group = festival.setdefault(job.voice, [])
            group.append(job)
            if len(group) == FESTIVAL_BATCH:
                units.append(festival.pop(job.voice))
        else:
            units.append([job])
    return units + list(festival.values())


# ---- the build ------------------------------------------------------------------------------------------------
def build_demo_corpus(
    out: str | os.PathLike = "data/demo",
    per_class: int = 240,
    eval_per_class: int = 60,
    seed: int = 0,
    task: str = "attribute",
    jobs: int | None = None,
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
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}. Received: task={task!r}")
    missing = missing_programs()
    if missing:
        raise RuntimeError(f"speech engines not installed: {missing}; run scripts/install_system_deps.sh")
    out = Path(out)
    started = time.time()
    settings = {"per_class": per_class, "eval_per_class": eval_per_class, "seed": seed}
    plan = plan_corpus(per_class, eval_per_class, seed)
    _check_settings(out, settings)
    for path in list(out.glob("*/.*.partial.*")) + list(out.glob(".build/.*.partial.*")):
        path.unlink()  # left behind by an interrupted build
    todo = [job for job in plan if not _finished(out, job)]
    failures = _render_all(todo, out, jobs or os.cpu_count() or 1)
    if failures:
        raise RuntimeError(_failure_report(failures, plan))
    records = pd.DataFrame([json.loads((out / ".build" / f"{Path(j.track).stem}.json").read_text()) for j in plan])
    _write_tables(out, records, task)
    atomic_write_text(out / "README.md", _readme(records, settings, task, time.time() - started, len(todo)))
    return out


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
    record = out / ".build" / "settings.json"
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous != settings:
            raise ValueError(
                f"{out} holds a corpus built with {previous}; it cannot be finished with {settings}. "
                f"Use the same arguments, another --out, or delete {out}."
            )
    else:
        atomic_write_json(record, settings)


def _finished(out: Path, job: ClipJob) -> bool:
    return (out / job.split / job.track).is_file() and (out / ".build" / f"{Path(job.track).stem}.json").is_file()


def _render_all(todo: list[ClipJob], out: Path, workers: int) -> list[str]:
    failures = []
    units = _batches(todo)
    with tqdm(total=len(todo), desc="corpus", unit="clip", dynamic_ncols=True) as progress:
        if workers <= 1:
            for unit in units:
                failures += _render_batch(unit, out)
                progress.update(len(unit))
        else:
            context = multiprocessing.get_context("spawn")  # safe even when the caller has TensorFlow loaded
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = {pool.submit(_render_batch, unit, out): len(unit) for unit in units}
                for future in concurrent.futures.as_completed(futures):
                    failures += future.result()
                    progress.update(futures[future])
    return failures


def _write_tables(out: Path, records: pd.DataFrame, task: str) -> None:
    records = records.copy()
    records["detect_id"] = (records["engine"] != "human").astype(int)
    records["detect_name"] = records["detect_id"].map(dict(enumerate(DETECTION_CLASSES)))
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
    counts = records.pivot_table(index="class_name", columns="split", values="track", aggfunc="count")
    counts = counts.reindex(index=ATTRIBUTION_CLASSES, columns=list(SPLITS)).fillna(0).astype(int)
    table = "\n".join(
        ["| class | " + " | ".join(SPLITS) + " |", "|---|" + "---|" * len(SPLITS)]
        + [f"| {c} | " + " | ".join(str(v) for v in counts.loc[c]) + " |" for c in counts.index]
    )
    voices = records.groupby("split")["speaker"].unique()
    held_out = sorted(v.speaker for vs in CLASS_VOICES.values() for v in vs if v.held_out)
    human = {s: sorted(x for x in voices.get(s, []) if "/" in x) for s in SPLITS}
    return README_TEMPLATE.format(
        table=table,
        held_out=", ".join(held_out),
        train_humans=", ".join(human["train"]),
        eval1_humans=", ".join(human["eval_part1"]),
        eval2_humans=", ".join(human["eval_part2"]),
        task=task,
        classes=", ".join(f"{i} {c}" for i, c in enumerate(TASKS[task])),
        settings=", ".join(f"{k}={v}" for k, v in settings.items()),
        minutes=seconds / 60,
        rendered=rendered,
        hours=records["duration"].sum() / 3600,
    )


def plan_summary(plan: list[ClipJob]) -> pd.DataFrame:
    """The plan as a table (one row per clip), for inspection and tests."""
    return pd.DataFrame([{**asdict(job), "class_name": job.class_name} for job in plan])
