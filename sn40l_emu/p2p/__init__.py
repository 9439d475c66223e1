"""Peer-to-peer message layer between sockets: frames, links, topologies, transports."""
