"""`python -m services.cli`: the `realname` command."""

import sys

from services.cli.main import main

sys.exit(main())
