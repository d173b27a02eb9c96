"""Where parties run: ``local.py`` (this process or worker processes) and ``flower/`` (Flower), each behind
the ``Parties`` handle of ``base.py`` that strategies program against."""
