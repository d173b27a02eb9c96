"""Privacy you can measure: differential privacy per party, its accounting, and a leakage audit.

- :mod:`.mechanisms` DP-SGD on a party's discriminator, or the GS-WGAN gradient sanitizer on its
  feedback; the filter every reply of a private party passes (threat model in its docstring and
  ``docs/PRIVACY.md``).
- :mod:`.accounting` the plan (noise multiplier from a target epsilon) and the ledger, both on
  Opacus's RDP accountant.
- :mod:`.budget` the coordinator's hook that ends a run cleanly before a budget runs out.
- :mod:`.audit` memorization and membership-inference audit of a finished run (``distgan audit``).

Modules are imported on use: Opacus is slow to import and runs without DP never need it.
"""
