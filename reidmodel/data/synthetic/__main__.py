"""``python -m reidmodel.data.synthetic``: see ``cli``."""

import sys

from reidmodel.data.synthetic.cli import main

sys.exit(main())
