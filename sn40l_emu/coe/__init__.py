"""Composition of Experts (docs/model.md §4): routing workload, HBM expert cache, capacity, serving.

The modules here are pure (no Ray, no node): ``workload`` says which expert each
prompt goes to, ``cache`` decides which experts stay in HBM, ``capacity`` says
how many experts a node can hold, ``serving`` runs a FIFO queue in virtual time.
"""
