"""The README.md the corpus builder writes into every corpus folder."""

README_TEMPLATE = """\
# voxtrace demo corpus

Synthetic speech attribution data built on this machine from real speech engines and real human recordings
(`voxtrace corpus`, {settings}). Labels are for the `{task}` task: {classes}.

## Layout (SP Cup 2022 style)

- `train/` audio and `train/labels.csv` (`track,algorithm`, algorithm = integer class id)
- `eval_part1/` ... `eval_part5/` audio and `labels_eval_partK.csv` beside them (`labels_eval_partK_detect.csv`:
  the same tracks labelled 0 bonafide / 1 spoof); each part holds one axis out of training entirely:
{axes}
- `metadata.csv`: track, split, class id and name, engine, voice, speaker, text id (into
  `voxtrace.data.corpus.sentences.sentence_list()`, or `prose:N` into `voxtrace.data.corpus.cross.prose_sentences()`
  in parts 4-5; `+` joins the sentences of one clip), replaced (the sentences the engine could not speak, each
  replaced by the next spare sentence of the same split),
  perturbations (the channel families applied, in order, with their parameters), narrowband (1 when the clip
  has almost no energy above 4 kHz), duration, the detection label (detect_id / detect_name: 0 bonafide =
  human speech, 1 spoof = everything synthetic, vocoded speech included), and voice_in_train (True when the
  clip's speaker, a voice or a human speaker, also speaks in `train/`)

Track names are random hex ids: they say nothing about the class. Every clip is rendered from its entry in
the plan alone (its seed, texts, voice and channels; Piper clips in fixed batches, each spoken by a freshly
seeded session), so a rerun or another build with the same arguments and engine versions writes the same audio.

## Clips per class

{table}

{hours:.2f} hours in all. All audio is 16 kHz mono 16-bit PCM. Train and parts 1-3 are silence-trimmed,
loudness-normalised (-23 dBFS RMS over active frames, peaks under 0.95) and 2-6 s long; parts 4-5 are
finished otherwise (see below).

## Generators

| id | class | generator |
|---|---|---|
| 0 | espeak | espeak-ng formant synthesis: {voices_espeak} |
| 1 | clustergen | flite CLUSTERGEN statistical parametric voices: {voices_clustergen} |
| 2 | diphone | residual-excited LPC diphones (flite / festival): {voices_diphone} |
| 3 | hts | festival HTS (HMM) voices: {voices_hts} |
| 4 | vits | Piper VITS: {voices_vits} |
| 5 | unknown | human speech from Debian packages; every 2nd clip resynthesised by a vocoder: {train_vocoders} in train and parts 1-2, {held_out_vocoders} in part 3 only |

Speaking rate varies by +-12 % per clip (and pitch for espeak). Each sentence is our own (a combinatorial
list of 900), split 55/15/15/15 between train and the three parts, so no sentence is in two splits.

## Voices: held out

A model must attribute the synthesis method, not the voice, so the evaluation parts contain voices that
train never has: {held_out}. Half of the evaluation clips of a multi-voice class use a held-out voice, the
other half a training voice (with unseen sentences). The human speakers are disjoint between splits:

{humans}

## Channels: parity in train, held out in part 2

In `train/` every class meets the same channels, so no channel property tells the classes apart: a share of
the synthetic clips goes through a narrowband line ({narrowband_lines}) as human recordings come narrowband,
then clips of every class go through a room or noise ({train_rooms}) and a codec ({train_codecs}) equally
often. Train-time augmentation draws from the same training families. `eval_part2` uses only the held-out
families: a codec ({held_out_codecs}) on every clip, and on some an impairment ({held_out_impairments}).
Narrowband share per class and split (parity check):

{narrowband}

Human recordings longer than 6 s are cut into segments; shorter ones (words, letters, game lines) of one
speaker are joined with short pauses into 2-6 s segments. Most human speech here is not English (Czech and
Dutch game dialogue, letters and words in many languages) while every engine speaks English: a model may
partly learn language as a cue for `unknown`; the vocoded `unknown` clips are resynthesised from the same
recordings, so language alone does not separate `unknown` from the known generators.

## Cross-corpus: parts 4 and 5, made apart

Parts 1-3 are made by the same builder as train, so a model can lean on its habits and still score well there.
Parts 4 and 5 are planned and finished by another path (`voxtrace.data.corpus.cross`, its own random stream)
that shares only the engines, the human recordings, the vocoders and the channel families with the rest:

- texts: {cross_sentences} sentences of English prose from the Debian package {text_package} (plain ASCII,
  {words} words, none in the training sentence list), split between the two parts; {join_share:.0%} of the
  clips speak two sentences in a row;
- rendering: speaking rate x{rate}, espeak pitch {pitch}, word gap {word_gap} (10 ms units) and
  amplitude {amplitude}, Piper noise scale {noise_scale} and duration noise {noise_w};
- finishing: the engine's or the recording's raw output, the speech span found at -{span_db:.0f} dB of its
  loudest 10 ms, {edge} s of its own silence kept on either side, {min_s}-{max_s} s long (human speech cropped
  to a random length in that range), peak-normalised to a random {level} dBFS;
- voices: {cross_voices}; human speakers: only speakers of parts 1-3, never one of train (every installed
  speaker already has a split);
- `unknown`: half human speech, half human speech resynthesised by each vocoder in turn ({cross_vocoders});
- part 5: other draws of the same kind, every clip through a held-out codec ({held_out_codecs}) and
  {impairment_share:.0%} also through a held-out impairment ({held_out_impairments}).

This build rendered {rendered} clips in {minutes:.1f} minutes (clips already present were kept).
"""
