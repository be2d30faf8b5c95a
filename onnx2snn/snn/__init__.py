"""Spiking networks: neurons, the multi-step engine, the binary-spike form, save/load."""
