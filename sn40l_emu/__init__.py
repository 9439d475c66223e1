"""sn40l-emu: a distributed emulator of a SambaNova SN40L node on Ray.

Importing the package has no side effects: Ray is started only by
:mod:`sn40l_emu.cluster` when a node is built.
"""

__version__ = "0.1.0"
