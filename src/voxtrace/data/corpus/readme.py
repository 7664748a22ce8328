"""The README.md the corpus builder writes into every corpus folder."""

README_TEMPLATE = """\
# voxtrace demo corpus

Synthetic speech attribution data built on this machine from real speech engines and real human recordings
(`voxtrace corpus`, {settings}). Labels are for the `{task}` task: {classes}.

## Layout (SP Cup 2022 style)

- `train/` audio and `train/labels.csv` (`track,algorithm`, algorithm = integer class id)
- `eval_part1/` audio (clean) and `labels_eval_part1.csv` beside it
- `eval_part2/` audio and `labels_eval_part2.csv`: every clip went through 1 to 3 of reverberation
  (RT60 0.2-0.8 s), white / pink / brown noise at 10-30 dB SNR and MP3 at 6-8 kbps (LAME's lowest bitrate
  is 8 kbps, so 6 and 7 kbps are encoded at 8 kbps, 8 kHz); `metadata.csv` lists what each clip got
- `metadata.csv`: track, split, class id and name, engine, voice, speaker, text id (into
  `voxtrace.data.corpus.sentences.sentence_list()`; `+` joins the sentences of one clip), replaced (the
  sentences the engine could not speak, each replaced by the next spare sentence of the same split),
  perturbations, duration, and the detection label
  (detect_id / detect_name: 0 bonafide = human speech, 1 spoof = everything synthetic, Griffin-Lim included)

Track names are random hex ids: they say nothing about the class.

## Clips per class

{table}

{hours:.2f} hours in all. All audio is 16 kHz mono 16-bit PCM, silence-trimmed, loudness-normalised
(-23 dBFS RMS over active frames, peaks under 0.95) and 2-6 s long.

## Generators

| id | class | generator |
|---|---|---|
| 0 | espeak | espeak-ng formant synthesis: en-us, en-us+m1, en-us+m3, en-us+f1, en-gb, en-us+f3 |
| 1 | clustergen | flite CLUSTERGEN statistical parametric voices: awb, slt, rms |
| 2 | diphone | residual-excited LPC diphones: flite kal16, festival kal_diphone, lp_diphone, pc_diphone (Italian) and ked_diphone |
| 3 | hts | festival HTS (HMM) voices cmu_us_slt_arctic_hts and upc_ca_ona_hts (Catalan) |
| 4 | vits | Piper VITS en_US-joe-medium |
| 5 | unknown | human speech from Debian packages, and Griffin-Lim resynthesis of it (every 4th clip) |

Speaking rate varies by +-12 % per clip (and pitch for espeak). Each sentence is our own (a combinatorial
list of 900); the sentences are split 60/20/20 between train, eval_part1 and eval_part2, so no sentence is
in two splits.

## Voice and speaker hold-out

A model must attribute the synthesis method, not the voice, so the evaluation parts contain voices that
train never has: {held_out}. Half of the evaluation clips of a multi-voice class use a held-out voice, the
other half a training voice (with unseen sentences). The human speakers are disjoint between splits:

- train: {train_humans}
- eval_part1: {eval1_humans}
- eval_part2: {eval2_humans}

Human recordings longer than 6 s are cut into segments; shorter ones (words, letters, game lines) of one
speaker are joined with short pauses into 2-6 s segments. Most human speech here is not English (Czech and
Dutch game dialogue, letters and words in many languages) while every engine speaks English: a model may
partly learn language as a cue for `unknown`; English human speech (Allison's telephone prompts, English
game voices, letters and words) is present in train to soften that.

This build rendered {rendered} clips in {minutes:.1f} minutes (clips already present were kept).
"""
