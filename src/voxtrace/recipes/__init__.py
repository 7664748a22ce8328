"""Recipes: whole runs of voxtrace's commands, end to end (`demo`: the competition pipeline on the demo corpus;
`stages`: the resumable stage runner they share)."""
