"""`python -m components.train` is the worker (one rank); see components/train/worker.py."""

import sys

from components.train.worker import main

sys.exit(main())
