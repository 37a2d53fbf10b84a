"""`python -m forgea_gh` is `forgea-gh`."""

import sys

import forgea_gh.cli

if __name__ == "__main__":
    sys.exit(forgea_gh.cli.main())
