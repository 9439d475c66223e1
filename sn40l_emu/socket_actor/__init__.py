"""One emulated socket: pure models (clock, memory tiers, DMA, tile timing) and the Ray actor shell."""
