"""The applications: the `visprune` command (cli), the demo, the benchmark and the viewer."""
