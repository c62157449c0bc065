"""``python -m jepa_core.plugins``: the listing of ``python -m jepa_core.components``, by the name users try first."""

import sys

from jepa_core.components import main

sys.exit(main())
