"""Model builders, detector losses and decoders."""
