"""`python -m policy` is the `image-policy` command."""

import sys

from policy.cli import main

sys.exit(main())
