"""Fine-tuning, data and evaluation of the task classifier: training runs, leave-one-family-out
evaluation, the open-set routing table (training/README.md).

Imports `models`; nothing imports `training`, so the server never loads it.
"""
