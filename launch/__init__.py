"""Assembling and launching runs from a Config: the layer above engine/, distillers/, models/ and
datasets/ that ``train.py``, ``eval.py`` and ``tools/`` share (so the CLIs stay thin and the
engine stays free of distillation)."""
