"""``python -m jaxnets``: the ``jaxnets`` command (`jaxnets.cli`) without its script."""

import sys

from jaxnets.cli import main

if __name__ == "__main__":
    sys.exit(main())
