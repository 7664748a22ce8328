import hashlib
import itertools
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from voxtrace import cli
from voxtrace.config import ATTRIBUTION_CLASSES
from voxtrace.data import perturb
from voxtrace.data.corpus import build as build_module
from voxtrace.data.corpus import cross, vocoders
from voxtrace.data.corpus import build_demo_corpus, plan_corpus
from voxtrace.data.corpus.build import plan_summary
from voxtrace.data.corpus.engines import CLASS_VOICES, missing_programs
from voxtrace.data.corpus.sentences import sentence_list

HELD_OUT = {v.speaker for voices in CLASS_VOICES.values() for v in voices if v.held_out}
needs_engines = pytest.mark.skipif(bool(missing_programs()), reason="speech engines not installed")
needs_prose = pytest.mark.skipif(not all(Path(f).is_file() for f in cross.TEXT_FILES),
                                 reason=f"{cross.TEXT_PACKAGE} not installed")
BUILDER_PARTS = build_module.BUILDER_SPLITS[1:]


def test_sentences_are_fixed_distinct_and_speakable():
    sentences = sentence_list()
    assert len(sentences) == len(set(sentences)) == 900
    assert all(9 <= len(s.split()) <= 17 and s[-1] in ".?" for s in sentences)
    assert sentence_list() is sentences


@needs_engines
def test_plan_keeps_splits_apart():
    plan = plan_summary(plan_corpus(per_class=40, eval_per_class=12, seed=3))
    counts = plan.groupby(["split", "class_name"]).size().unstack()
    assert (counts.loc["train"] == 40).all() and (counts.loc[list(BUILDER_PARTS)] == 12).all().all()
    texts = {s: set(plan.loc[(plan.split == s) & (plan.class_name != "unknown"), "text_ids"].sum())
             for s in build_module.BUILDER_SPLITS}
    human = {s: set(plan.loc[(plan.split == s) & (plan.class_name == "unknown"), "speaker"]) for s in texts}
    assert all(human.values())
    for a, b in itertools.combinations(build_module.BUILDER_SPLITS, 2):
        assert not texts[a] & texts[b] and not human[a] & human[b], (a, b)
    train_speakers = set(plan.loc[plan.split == "train", "speaker"])
    assert not train_speakers & HELD_OUT
    for split in BUILDER_PARTS:
        eval_speakers = set(plan.loc[plan.split == split, "speaker"])
        for class_name, voices in CLASS_VOICES.items():
            if any(v.held_out for v in voices):
                assert eval_speakers & {v.speaker for v in voices if v.held_out}, (split, class_name)
    unknown = plan[plan.class_name == "unknown"]
    engines = {s: set(unknown.loc[unknown.split == s, "engine"]) for s in build_module.BUILDER_SPLITS}
    assert engines["train"] == engines["eval_part1"] == {"human", *vocoders.TRAIN_VOCODERS}
    assert engines["eval_part3"] == {"human", *vocoders.HELD_OUT_VOCODERS}  # generators never in train
    assert (unknown.engine != "human").mean() == pytest.approx(0.5, abs=0.05)
    channels = plan.channels.map(lambda c: set(c))
    train_families = set(perturb.TRAIN_CODECS) | set(perturb.TRAIN_ROOMS)
    assert set().union(*channels[plan.split == "train"]) == train_families
    part2 = channels[plan.split == "eval_part2"]
    assert all(c & set(perturb.HELD_OUT_CODECS) for c in part2) and not set().union(*part2) & train_families
    assert not set().union(*channels[plan.split.isin(["eval_part1", "eval_part3"])])
    assert plan.track.is_unique and plan.track.str.fullmatch(r"[0-9a-f]{32}\.wav").all()


@needs_engines
def test_plan_is_deterministic_per_seed():
    a = plan_summary(plan_corpus(per_class=8, eval_per_class=4, seed=0))
    b = plan_summary(plan_corpus(per_class=8, eval_per_class=4, seed=0))
    c = plan_summary(plan_corpus(per_class=8, eval_per_class=4, seed=1))
    pd.testing.assert_frame_equal(a, b)
    assert not set(a.track) & set(c.track)


def test_segments_cut_long_and_join_short_recordings():
    rng = np.random.default_rng(0)
    files = [("long.ogg", 20.0)] + [(f"w{i}.ogg", 0.8) for i in range(30)]
    segments = build_module._segments(files, rng)
    long_pieces = [p for pieces, _ in segments for p in pieces if p[0] == "long.ogg"]
    assert all(p[2] <= build_module.MAX_S for p in long_pieces)
    assert sum(p[2] for p in long_pieces[:10]) >= 16.0
    for pieces, target in segments:
        assert build_module.MIN_S <= target <= build_module.MAX_S
        assert sum(p[2] for p in pieces) >= target


def test_fit_length_cuts_at_a_pause():
    sr = build_module.SAMPLE_RATE
    x = np.ones(8 * sr, np.float32)
    x[int(5.2 * sr): int(5.3 * sr)] = 0.0
    y = build_module._fit_length(x)
    assert 5.2 * sr <= len(y) <= 5.3 * sr and y[-1] == 0.0
    short = np.ones(3 * sr, np.float32)
    assert build_module._fit_length(short) is short


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "demo"
    build_demo_corpus(out, per_class=1, eval_per_class=1, seed=5, jobs=2, cross_per_class=1)
    return out


@needs_engines
def test_build_with_real_engines(tiny_corpus):
    out = tiny_corpus
    meta = pd.read_csv(out / "metadata.csv", dtype={"text_id": str}, keep_default_na=False)
    assert len(meta) == 6 * len(build_module.SPLITS)
    assert sorted(meta.class_name.unique()) == sorted(ATTRIBUTION_CLASSES)
    for split, labels_file in build_module.LABEL_FILES.items():
        labels = pd.read_csv(out / labels_file)
        assert list(labels.columns) == ["track", "algorithm"]
        part = meta[meta.split == split].set_index("track")
        assert set(labels.track) == set(part.index) == {p.name for p in (out / split).glob("*.wav")}
        assert (labels.set_index("track").algorithm == part.class_id.loc[labels.track]).all()
        detect = pd.read_csv(out / build_module.LABEL_FILES[split].replace(".csv", "_detect.csv"))
        assert (detect.set_index("track").algorithm == part.detect_id.loc[detect.track]).all()
    for row in meta.itertuples():
        info = sf.info(str(out / row.split / row.track))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        low, high = (cross.MIN_S, cross.MAX_S) if row.split in build_module.CROSS_PARTS else (
            build_module.MIN_S, build_module.MAX_S + 0.01)
        assert low <= info.duration <= high, row
    assert (meta[meta.split.isin(["eval_part2", "eval_part5"])].perturbations != "").all()
    assert (meta[meta.split.isin(["eval_part1", "eval_part3", "eval_part4"])].perturbations == "").all()
    for row in meta.itertuples():  # the narrowband flag agrees with the spectrum of the written clip
        x, _ = sf.read(str(out / row.split / row.track))
        power = np.abs(np.fft.rfft(x)) ** 2
        assert row.narrowband == int(power[np.fft.rfftfreq(len(x), 1 / 16000) >= 4000].sum() < 1e-3 * power.sum())
    assert not set(meta.loc[meta.split == "train", "speaker"]) & HELD_OUT
    texts = {s: set(meta.loc[(meta.split == s) & (meta.text_id != ""), "text_id"].str.split("+").sum())
             for s in build_module.SPLITS}
    assert not texts["train"] & set().union(*(texts[p] for p in build_module.EVAL_PARTS))
    assert all(t.startswith("prose:") for p in build_module.CROSS_PARTS for t in texts[p])
    train_speakers = set(meta.loc[meta.split == "train", "speaker"])
    assert (meta.voice_in_train == meta.speaker.isin(train_speakers)).all()
    cross_rows = meta[meta.split.isin(build_module.CROSS_PARTS)]
    assert not cross_rows[cross_rows.class_name == "unknown"].voice_in_train.any()
    assert (meta.detect_id == (meta.engine != "human")).all()
    readme = (out / "README.md").read_text()
    assert "espeak:en-gb" in readme and "flite:rms" in readme and "festival:ked_diphone" in readme
    assert not any(re.search(name, track) for name in ATTRIBUTION_CLASSES for track in meta.track)


@needs_engines
def test_resume_renders_only_the_batches_of_missing_clips(tiny_corpus, monkeypatch):
    """A rerun renders the batches (`_batches`: one clip, or a voice's run of festival / Piper clips) that miss a
    clip; the other clips are not touched, and the finished clips of a re-rendered batch come out the same."""
    out = tiny_corpus
    meta = pd.read_csv(out / "metadata.csv")
    removed = pd.concat([meta[meta.engine == "piper"].head(1), meta[meta.engine != "piper"].sample(2, random_state=0)])
    for row in removed.itertuples():
        (out / row.split / row.track).unlink()
    (out / "train" / ".x.abc.partial.wav").write_bytes(b"half")  # left by a killed build
    units = build_module.work_units(build_module.corpus_plan(1, 1, 5, cross_per_class=1), out)
    batched = sorted(job.track for _, unit in units for job in unit)
    assert set(removed.track) < set(batched)  # the Piper clip's batch holds other finished clips
    kept = meta[~meta.track.isin(removed.track)]
    audio = {t: (out / s / t).read_bytes() for s, t in zip(kept.split, kept.track)}
    untouched = kept[~kept.track.isin(batched)]
    before = {t: (out / s / t).stat().st_mtime_ns for s, t in zip(untouched.split, untouched.track)}
    rendered = []
    original = build_module.render_clip
    monkeypatch.setattr(build_module, "render_clip",
                        lambda job, *a, **k: rendered.append(job.track) or original(job, *a, **k))
    original_cross = cross.render_clip
    monkeypatch.setattr(cross, "render_clip",
                        lambda job, *a, **k: rendered.append(job.track) or original_cross(job, *a, **k))
    build_demo_corpus(out, per_class=1, eval_per_class=1, seed=5, jobs=1, cross_per_class=1)
    assert sorted(rendered) == batched
    assert before == {t: (out / s / t).stat().st_mtime_ns for s, t in zip(untouched.split, untouched.track)}
    assert audio == {t: (out / s / t).read_bytes() for s, t in zip(kept.split, kept.track)}
    assert not list(out.glob("*/.*partial*"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "metadata.csv").drop(columns="duration"),
                                  meta.drop(columns="duration"))
    with pytest.raises(ValueError, match="per_class"):
        build_demo_corpus(out, per_class=3, eval_per_class=1, seed=5, jobs=1, cross_per_class=1)
    with pytest.raises(ValueError, match="cross_per_class"):
        build_demo_corpus(out, per_class=1, eval_per_class=1, seed=5, jobs=1, cross_per_class=2)


@needs_engines
def test_piper_clips_depend_on_their_batch_alone(tmp_path):
    """ONNX Runtime's VITS noise moves on with every clip a session speaks; each batch of Piper clips starts a
    session seeded by its first clip, so a batch renders the same bytes whatever the process rendered before."""
    piper = [job for job in plan_corpus(per_class=3, eval_per_class=1, seed=0) if job.engine == "piper"]
    batch, other = piper[:2], piper[2:3]
    assert [batch] == build_module._batches(batch)
    build_module._render_batch(batch, tmp_path / "first")
    build_module._render_batch(other, tmp_path / "other")  # the process's Piper session speaks something else
    build_module._render_batch(batch, tmp_path / "again")
    for job in batch:
        first = (tmp_path / "first" / job.split / job.track).read_bytes()
        assert first == (tmp_path / "again" / job.split / job.track).read_bytes()
    assert (tmp_path / "other" / other[0].split / other[0].track).is_file()


@needs_engines
def test_festival_clips_do_not_depend_on_their_batch():
    """FESTIVAL_BATCH only sets how many clips one festival process speaks: a clip spoken in a batch is the same
    audio as the clip spoken alone (each item's rate is set anew, none carries over to the next)."""
    from voxtrace.data.corpus.engines import Voice, synthesize_festival_batch

    items = [(sentence_list()[i], rate) for i, rate in ((3, 1.15), (7, 0.9), (11, 1.0))]
    voice = Voice("festival", "kal_diphone")
    together = synthesize_festival_batch(voice, items)
    for item, (audio, rate) in zip(items, together):
        alone, alone_rate = synthesize_festival_batch(voice, [item])[0]
        assert rate == alone_rate and np.array_equal(audio, alone)


@needs_engines
def test_corpus_command_detect_labels(tiny_corpus, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_corpus, out)
    code = cli.main(["corpus", "--out", str(out), "--per-class", "1", "--eval-per-class", "1", "--seed", "5",
                     "--cross-per-class", "1", "--task", "detect", "--jobs", "1"])
    assert code == 0
    meta = pd.read_csv(out / "metadata.csv").set_index("track")
    labels = pd.read_csv(out / "labels_eval_part1.csv")
    assert set(labels.algorithm) == {0, 1}
    assert (labels.algorithm.values == (meta.loc[labels.track, "engine"] != "human").astype(int).values).all()
    assert cli.main(["corpus", "--out", str(tmp_path / "fresh"), "--per-class", "0"]) == 2
    assert not (tmp_path / "fresh").exists()


def _sentence_shapes() -> dict[str, str]:
    """The first sentence of each shape `sentence_list` generates (statement, comma, questions, numbers)."""
    shapes = {
        "question_did": r"^Did ", "question_why": r"^Why would ", "question_is_it": r"^Is it true that ",
        "timetable_numbers": r"^The train to ", "ordered_numbers": r" ordered ", "comma": r"^[^,]+, ",
        "statement": r"^[^,?]+\.$",
    }
    found = {}
    for text in sentence_list():
        for shape, pattern in shapes.items():
            if shape not in found and re.search(pattern, text):
                found[shape] = text
                break
    assert set(found) == set(shapes), set(shapes) - set(found)
    return found


@needs_engines
@pytest.mark.parametrize("voice", [v for voices in CLASS_VOICES.values() for v in voices], ids=lambda v: v.speaker)
def test_every_voice_renders_every_sentence_shape(voice, tmp_path):
    """Each shape of sentence becomes a clip with every voice, spoken whole by itself: a voice that fails on a
    shape, or says it too briefly, would fill its clips of that shape with spare sentences of the split."""
    shapes = _sentence_shapes()
    sentences = sentence_list()
    spares = [i for i, s in enumerate(sentences) if s not in shapes.values()][:build_module.SPARE_TEXTS]
    for shape, text in shapes.items():
        job = build_module.ClipJob(
            track=f"{shape}.wav", split="train", class_id=0, engine=voice.engine, voice=voice.name,
            speaker=voice.speaker, seed=1, text_ids=[sentences.index(text)] + spares,
        )
        record = build_module.render_clip(job, tmp_path)
        assert record["replaced"] == "" and record["text_id"] == str(job.text_ids[0]), (shape, record)
        x, rate = sf.read(str(tmp_path / "train" / job.track))
        assert rate == 16000 and build_module.MIN_S * rate <= len(x) and np.abs(x).max() > 0.01, shape


@needs_engines
def test_a_sentence_the_engine_cannot_speak_is_replaced(tmp_path):
    """festival's Italian diphone voice fails on 'past nine?' (SIOD error): the clip takes the next sentence."""
    sentences = sentence_list()
    failing = next(i for i, s in enumerate(sentences) if s.endswith("at half past nine?"))
    spare = next(i for i, s in enumerate(sentences) if s.endswith(".") and "nine" not in s)
    voice = next(v for v in CLASS_VOICES["diphone"] if v.name == "pc_diphone")
    with pytest.raises(build_module.SynthesisError, match="pc_diphone"):
        build_module.synthesize(voice, sentences[failing])
    job = build_module.ClipJob(track="a.wav", split="train", class_id=2, engine="festival", voice="pc_diphone",
                               speaker=voice.speaker, seed=0, text_ids=[failing, spare])
    errors = build_module._render_batch([job], tmp_path)
    assert errors == []
    record = pd.read_json(tmp_path / ".build" / "a.json", typ="series", dtype=False)
    assert record["text_id"] == str(spare) and record["replaced"] == str(failing)


def test_a_broken_voice_is_named_with_its_package(tmp_path, monkeypatch):
    """Clips of a voice that speaks nothing fail; the build reports the voice and the package providing it."""
    def broken(voice, text, rate=1.0, pitch=50):
        if voice.name == "kal16":
            raise build_module.SynthesisError(f"{voice.speaker} failed on {text!r}: voice not found")
        return np.sin(np.arange(3 * 16000) * 0.05).astype(np.float32) * 0.3, 16000

    monkeypatch.setattr(build_module, "synthesize", broken)
    jobs = [build_module.ClipJob(track=f"{name}.wav", split="train", class_id=2, engine="flite", voice=name,
                                 speaker=f"flite:{name}", seed=0, text_ids=[1, 2, 3]) for name in ("kal16", "awb")]
    failures = [e for job in jobs for e in build_module._render_batch([job], tmp_path)]
    assert [speaker for speaker, _ in failures] == ["flite:kal16"]
    report = build_module._failure_report(failures, jobs)
    assert "flite:kal16 (provided by flite) failed on 1 clips" in report and "could not speak any of 3" in report
    assert (tmp_path / "train" / "awb.wav").is_file() and not (tmp_path / "train" / "kal16.wav").exists()


# ---- the cross-corpus parts ----------------------------------------------------------------------------------
FAKE_SPEAKERS = {f"{family}/{i}": [(f"{family}{i}_{k}.ogg", 1.0 + (k % 7)) for k in range(12)]
                 for family in ("a", "b") for i in range(7)}


def test_builder_plan_is_unchanged_by_the_cross_parts():
    """The plan of train and parts 1-3 is the one made before the cross-corpus parts existed (fingerprint)."""
    plan = plan_summary(plan_corpus(per_class=4, eval_per_class=2, seed=0, speakers=FAKE_SPEAKERS))
    assert set(plan.split) == set(build_module.BUILDER_SPLITS)
    csv = plan.drop(columns=["engine", "voice"]).to_csv(index=False)  # engines of part 3 depend on what is installed
    assert hashlib.sha256(csv.encode()).hexdigest()[:16] == "6787ca0c2eea4cfd"
    splits = build_module.speaker_splits(0, FAKE_SPEAKERS)
    human = plan[plan.class_name == "unknown"]
    assert set(splits) == set(FAKE_SPEAKERS) and (human.speaker.map(splits) == human.split).all()


@needs_prose
def test_prose_sentences_are_plain_and_apart_from_the_training_sentences():
    prose = cross.prose_sentences()
    assert len(prose) == len(set(prose)) > 500
    assert not set(prose) & set(sentence_list())
    assert all(cross.MIN_WORDS <= len(s.split()) <= cross.MAX_WORDS and s.isascii() and s[-1] in ".?!" for s in prose)
    assert not [s for s in prose if re.search(r"[\"()\[\]{}<>@#$%&*_=/\\|~^]|--", s)]


@needs_prose
def test_cross_plan_voices_speakers_texts_and_channels():
    main = plan_corpus(per_class=2, eval_per_class=1, seed=3, speakers=FAKE_SPEAKERS)
    taken = {t.removesuffix(".wav") for t in plan_summary(main).track}
    jobs = cross.plan_cross(per_class=10, seed=3, taken=taken, speakers=FAKE_SPEAKERS)
    plan = pd.DataFrame([{**job.__dict__, "class_name": job.class_name} for job in jobs])
    assert (plan.groupby(["split", "class_name"]).size() == 10).all() and set(plan.split) == set(cross.CROSS_PARTS)
    assert plan.track.is_unique and not set(plan.track.str.removesuffix(".wav")) & taken
    splits = build_module.speaker_splits(3, FAKE_SPEAKERS)
    unknown = plan[plan.class_name == "unknown"]
    assert unknown.speaker.map(splits).isin(BUILDER_PARTS).all()  # never a speaker of train
    assert (unknown.engine == "human").sum() == len(unknown) // 2
    assert set(unknown.engine) - {"human"} == set(vocoders.available_vocoders(vocoders.VOCODERS))
    for class_name, voices in CLASS_VOICES.items():
        used = set(plan.loc[plan.class_name == class_name, "speaker"])
        held = {v.speaker for v in voices if v.held_out}
        assert used == (held or {v.speaker for v in voices}), class_name
    synthetic = plan[plan.class_name != "unknown"]
    texts = {p: set(synthetic.loc[synthetic.split == p, "text_ids"].sum()) for p in cross.CROSS_PARTS}
    assert not texts["eval_part4"] & texts["eval_part5"]
    assert synthetic.rate.between(*cross.RATE).all() and (synthetic.rate.max() - synthetic.rate.min()) > 0.3
    assert plan.level_dbfs.between(*cross.LEVEL_DBFS).all() and plan.level_dbfs.std() > 3
    assert set(plan["join"]) == {1, 2}
    part5 = plan[plan.split == "eval_part5"].channels
    assert all(c[-1] in perturb.HELD_OUT_CODECS and set(c[:-1]) <= set(perturb.HELD_OUT_IMPAIRMENTS) for c in part5)
    assert not plan[plan.split == "eval_part4"].channels.map(len).any()
    again = cross.plan_cross(per_class=10, seed=3, taken=taken, speakers=FAKE_SPEAKERS)
    assert [j.__dict__ for j in again] == [j.__dict__ for j in jobs]


def _active_rms_db(x: np.ndarray) -> float:
    """RMS over the 20 ms frames within 50 dB of the loudest, as `normalize_loudness` measures it."""
    energy = np.square(x[: len(x) // 320 * 320].reshape(-1, 320)).mean(axis=1)
    return 10 * np.log10(energy[energy >= energy.max() * 1e-5].mean())


@needs_engines
@needs_prose
def test_cross_clips_have_their_own_levels_silences_and_lengths(tiny_corpus):
    """Part 4 clips peak at their planned level and vary in loudness; clean train clips sit at -23 dBFS RMS."""
    out = tiny_corpus
    meta = pd.read_csv(out / "metadata.csv", keep_default_na=False)
    jobs = {j.track: j for j in build_module.corpus_plan(1, 1, 5, cross_per_class=1)}
    part4 = meta[meta.split == "eval_part4"]
    assert set(part4.track) <= set(jobs) and len(part4) == 6
    rms = []
    for row in part4.itertuples():
        x, _ = sf.read(str(out / row.split / row.track), dtype="float32")
        job = jobs[row.track]
        assert 20 * np.log10(np.abs(x).max()) == pytest.approx(job.level_dbfs, abs=0.05)
        assert cross.MIN_S <= len(x) / 16000 <= cross.MAX_S
        rms.append(_active_rms_db(x))
    train = meta[(meta.split == "train") & (meta.perturbations == "")]
    train_rms = [_active_rms_db(sf.read(str(out / "train" / t), dtype="float32")[0]) for t in train.track]
    # the builder's loudness normalisation (a clip whose peak would pass 0.95 ends a little quieter)
    assert train_rms and all(r <= -22.5 for r in train_rms) and abs(np.median(train_rms) + 23) < 0.5
    assert np.ptp(rms) > 6 and sum(not -23.5 <= r <= -22.5 for r in rms) >= 5
