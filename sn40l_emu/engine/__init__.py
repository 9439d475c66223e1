"""Running programs on a node: cost reuse, layer reuse, the program book, functional mode.

Sits above :mod:`sn40l_emu.cluster` (the node) and below the coordinator and the
experiment drivers, which ask it to run steps and programs.
"""
