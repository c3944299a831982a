"""Plug-ins that let other tools run visprune-pruned models (``lmms_eval``: the lmms-eval model)."""
