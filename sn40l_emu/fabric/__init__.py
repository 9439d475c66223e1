"""The fabric timing model: link FIFO servers, topologies, each sender's view of the network.

Pure: no messaging, no Ray, no wall clock. The P2P transports ask it when a chunk
arrives; the collectives' selector and closed forms ask it for routes and rates.
"""
