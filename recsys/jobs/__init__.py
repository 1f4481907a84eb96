"""The jobs: one module per command of the CLI (docs/ARCHITECTURE.md, "Rooms"). Only the jobs reach
across the rooms (data → training → export → serving, registry, report), and only the CLI imports them."""
