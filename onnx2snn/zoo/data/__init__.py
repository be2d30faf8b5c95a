"""Datasets: real sklearn digits, generated digit scenes, loaders for user data."""
