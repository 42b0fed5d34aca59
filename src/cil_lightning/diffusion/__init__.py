"""Framework-free maths of the method: schedules, condition noise, Analytic-Init, samplers, loss.

Imports only torch, so every piece reads beside the paper and tests in milliseconds.
"""
