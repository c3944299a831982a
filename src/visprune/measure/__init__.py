"""Measurement: counted FLOPs, memory of a prefill, host-read / CUDA-sync counters, the clock of visprune's own work."""
