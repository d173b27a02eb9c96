"""Where parties run: ``local.py`` (this process or worker processes) and ``flower/`` (Flower), each behind
the ``Parties`` handle that strategies program against (``distgan.parties``, beside the protocol)."""

import sys

from distgan import parties as base

# distgan.runtime.base was the home of Parties until it moved beside the protocol; its import path stays.
sys.modules.setdefault("distgan.runtime.base", base)
