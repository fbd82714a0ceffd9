"""Fine-tuning, data and evaluation of the task classifier (the training issue fills this in).

Imports `models`; nothing imports `training`, so the server never loads it.
"""
