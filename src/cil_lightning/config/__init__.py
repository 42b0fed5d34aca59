"""Hydra-side code: config checks, sweep checks and summaries, the Hydra callbacks that run them."""
