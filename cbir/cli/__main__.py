"""`python -m cbir.cli`: the console command, for processes started without the script."""

import sys

from cbir.cli.main import main

sys.exit(main())
