"""Adapters: a foreign network exposed as one denoiser interface D(x_t; t, cond) -> x0."""
