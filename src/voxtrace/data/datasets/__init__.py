"""Data set readers beyond the core ones of `voxtrace.data.manifest`: the SP Cup 2022 external corpora, MLAAD
source tracing, and the detection sets (In-the-Wild, ASVspoof 2021 LA / DF, ASVspoof 5). Every reader returns
the manifest columns (`common.MANIFEST_COLUMNS`) plus the condition columns its layout gives."""
