"""The study face of gdjax: what a person touches, on top of the core (which never imports it).

Modules, each importing only the core and the modules above it in this list:

| module | owns |
|---|---|
| `config` | TOML configs read into frozen dataclasses, validated once at the edge |
| `plots` | matplotlib figures of traces and sweeps (matplotlib imported inside the functions) |
| `runfolder` | the run folder: ownership marker, lock, parts, PARTIAL marker, interrupts |
| `problems` | costs beyond least squares: logistic / cross-entropy classifiers, users' own costs |
| `experiment` | a config turned into data, costs, gradient checks and sweeps, written to a run folder |
| `report` | the figures of a finished run |
| `cli` | the `gdjax` command |
| `command` | its installed entry point: signal handlers before JAX starts, then `cli` |
"""
