"""The duration `nash demo` announces, and the recipe it was measured on."""

from __future__ import annotations

import yaml

from nash_cli.demo.run import EXPECTED_SECONDS, demo_recipe_path, expected_duration

#: The training stages' (max_steps, batch_size) when EXPECTED_SECONDS was measured. A change to
#: either changes the demo's time: remeasure, then update EXPECTED_SECONDS, docs/demo.md and this.
MEASURED_ON = {"finetune_teacher": (300, 32), "prune_encoder": (300, 16), "distill": (250, 16)}


def test_the_estimate_is_for_the_packaged_recipe():
    stages = yaml.safe_load(demo_recipe_path().read_text())["stages"]
    assert {key: (stages[key]["max_steps"], stages[key]["batch_size"]) for key in MEASURED_ON} == MEASURED_ON


def test_the_demo_fits_in_five_minutes_and_says_so():
    assert sum(EXPECTED_SECONDS.values()) < 300
    line = expected_duration()
    assert line.startswith("nash demo: about 3 minutes on 2 free CPU cores (teacher ~75 s, ")
    assert "\n" not in line and line.endswith("a rerun continues where it stopped")
