"""Every preset runs the settings its summary states (the summary is what `distgan presets` shows)."""

from __future__ import annotations

import pytest

from distgan.presets import PRESETS, STATED, stated_value


@pytest.mark.parametrize("name", sorted(STATED))
def test_each_preset_has_the_settings_its_summary_states(name: str) -> None:
    config = PRESETS.get(name)()
    for path, promised in STATED[name].items():
        assert stated_value(config, path) == promised, f"preset {name}: {path} is {stated_value(config, path)!r}"
        assert f"{path}={promised}" in PRESETS.summary(name)


def test_the_dcgan_presets_run_dcgans_recipe_not_the_tuned_mlps() -> None:
    # Regression: they said "Adam 2e-4" and ran the tuned MLP's 1e-3 with the G average on.
    for name in ("fig16-18", "fig19-21"):
        train = PRESETS.get(name)().train
        assert (train.lr_g, train.lr_d, train.beta1, train.g_average) == (2e-4, 2e-4, 0.5, None)
