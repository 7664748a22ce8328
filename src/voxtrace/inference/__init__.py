"""Ensemble inference: checkpoint discovery, windowed prediction with TTA, fold -> model -> ensemble
averaging, pseudo-labels, open-set rejection and SP Cup submissions."""
