"""Classical baselines that the CNN ensembles are measured against."""
