"""The contracts every room of recsys shares (docs/ARCHITECTURE.md): column names, errors and exit
codes, the TOML config, file handling, artifact folder layouts, the time rule, the interest model's
interface. Nothing here imports another room of the code base, torch or transformers."""
