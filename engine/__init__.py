"""Training machinery that knows nothing of distillation.

The trainer trains any module whose training forward returns ``(logits, {name: loss})`` and whose
eval forward returns logits (or a dict of named logits, the first being the headline); the
pieces that know about teachers and methods are built by ``train.py`` and handed over.
"""
