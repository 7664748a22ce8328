"""The README.md the corpus builder writes into every corpus folder."""

README_TEMPLATE = """\
# voxtrace demo corpus

Synthetic speech attribution data built on this machine from real speech engines and real human recordings
(`voxtrace corpus`, {settings}). Labels are for the `{task}` task: {classes}.

## Layout (SP Cup 2022 style)

- `train/` audio and `train/labels.csv` (`track,algorithm`, algorithm = integer class id)
- `eval_part1/`, `eval_part2/`, `eval_part3/` audio and `labels_eval_partK.csv` beside them; each part holds
  one axis out of training entirely:
{axes}
- `metadata.csv`: track, split, class id and name, engine, voice, speaker, text id (into
  `voxtrace.data.corpus.sentences.sentence_list()`; `+` joins the sentences of one clip), replaced (the
  sentences the engine could not speak, each replaced by the next spare sentence of the same split),
  perturbations (the channel families applied, in order, with their parameters), narrowband (1 when the clip
  has almost no energy above 4 kHz), duration, and the detection label (detect_id / detect_name: 0 bonafide =
  human speech, 1 spoof = everything synthetic, vocoded speech included)

Track names are random hex ids: they say nothing about the class.

## Clips per class

{table}

{hours:.2f} hours in all. All audio is 16 kHz mono 16-bit PCM, silence-trimmed, loudness-normalised
(-23 dBFS RMS over active frames, peaks under 0.95) and 2-6 s long.

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

This build rendered {rendered} clips in {minutes:.1f} minutes (clips already present were kept).
"""
