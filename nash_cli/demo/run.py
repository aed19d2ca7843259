"""Where the demo's recipe lives (inside the package, so `nash demo` works from any directory),
and how long it takes."""

from __future__ import annotations

from pathlib import Path

#: Wall seconds of `nash demo` with the packaged recipe on 2 free CPU cores (x86-64 AMD EPYC,
#: torch's default 2 threads), rounded up; measured 2026-12-02 with no other job on the cores
#: (`run.json`: teacher 74.6 s, prune-encoder 50.6 s, distill 29.7 s, bench 4.2 s, eval 5.7 s;
#: 175 s for the whole process, start-up and report included). One thread does the same work in
#: 217 s of CPU time. Remeasure when `recipes/demo.yaml` or `inputs.py` changes (docs/demo.md).
EXPECTED_SECONDS = {"teacher": 75, "prune-encoder": 50, "distill": 30, "the rest": 20}


def demo_recipe_path() -> Path:
    """The packaged `demo.yaml`."""
    return Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"


def expected_duration() -> str:
    """The line `nash demo` prints as it starts: how long the packaged recipe takes, per stage."""
    minutes = round(sum(EXPECTED_SECONDS.values()) / 30) / 2
    stages = ", ".join(f"{name} ~{seconds} s" for name, seconds in EXPECTED_SECONDS.items())
    return (
        f"nash demo: about {minutes:g} minutes on 2 free CPU cores ({stages}); "
        "a rerun continues where it stopped"
    )
