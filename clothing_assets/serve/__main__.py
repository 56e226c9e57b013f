"""`python -m clothing_assets.serve [serve options]` or `... predict IMAGE...`."""

import sys

from clothing_assets.serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
