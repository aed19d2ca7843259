"""What `nash plan`'s search found, as the plan states it: the teacher's references, one row per
candidate, the recommendation and why, and the notes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nash_cli.stages.plan.cost import Candidate

if TYPE_CHECKING:
    from nash_cli.stages.plan.harness import Search


def references(search: Search) -> dict[str, Any]:
    """`PlanResult.references`: the teacher's median seconds per key, every timed call of it, the
    reference, the teacher over the reference and the calibration."""
    from nash_cli.stages.plan.harness import ratio

    timings, reference = search.timings, search.reference
    teacher_calls = {key: timings.beside_teacher[name] for key, name in search.teacher_names.items()}
    over_reference = {key: ratio(values, timings.beside_teacher[reference.label]) for key, values in teacher_calls.items()}
    return {**timings.teacher_seconds(), "calls": teacher_calls, "reference": reference.label,
            "teacher_over_reference": over_reference, "calibration": timings.calibration()}


def candidate_rows(search: Search, speedups: dict[Candidate, float]) -> list[dict[str, Any]]:
    """`PlanResult.candidates`: per candidate, most capacity first, how it was known and how fast it is."""
    from nash_cli.arch import count_parameters

    options, timings, space = search.options, search.timings, search.space
    timed, direct, model = timings.timed(), timings.direct, timings.model
    bytes_per_param = None
    if options.engine == "ctranslate2" and search.teacher_size is not None:
        bytes_per_param = search.teacher_size / count_parameters(space.teacher)["total"]
    rows = []
    for c in space.candidates:
        parameters = space.parameters[c]["total"]
        row = {
            **c.to_dict(),
            "label": c.label,
            "timed": c in timed,
            "confirmed": c in direct,
            "timed_calls": search.calls.get(c, 0),
            "seconds": timings.seconds(c),
            "predicted_s": model.predict(space.work[c]),
            "speedup": speedups[c],
            "speedup_vs_engine_teacher": timings.speedup(c, "engine"),
            "speedup_vs_transformers_teacher": timings.speedup(c, "transformers"),
            "parameters": parameters,
            "meets_target": speedups[c] >= options.speedup,
        }
        if options.engine == "ctranslate2":
            row["weights_mib"] = search.sizes.get(c, parameters * (bytes_per_param or 4) / 2**20)
            row["weights_estimated"] = c not in search.sizes
        else:
            row["weights_mib"] = parameters * 4 / 2**20
            row["weights_estimated"] = False
        rows.append(row)
    return rows


def recommendation(search: Search, choice: Candidate, meets: bool, speedups: dict[Candidate, float]) -> dict[str, Any]:
    """`PlanResult.recommendation`: the choice, its speedup, how it was known, and why."""
    options, direct = search.options, search.timings.direct
    return {
        **choice.to_dict(), "label": choice.label, "speedup": speedups[choice], "meets_target": meets,
        "timed": choice in search.timings.timed(), "confirmed": choice in direct, "best_reachable": max(speedups.values()),
        "why": _why(choice, meets, speedups, options.speedup, search.space.candidates),
        **({"estimate": search.estimates[choice], "per_repeat": direct[choice][options.speedup_against]["per_repeat"]}
           if choice in direct else {}),
    }


def notes(search: Search, choice: Candidate, speedups: dict[Candidate, float], *, restricted: bool) -> list[str]:
    """What the user should know about the timing: confirmations that changed the choice, the
    calibration, a recommendation predicted or not confirmed, and (`restricted`) how a reduced
    vocabulary was timed."""
    options, timings = search.options, search.timings
    timed, direct, calibration = timings.timed(), timings.direct, timings.calibration()
    lines = confirmation_notes(search.estimates, speedups, choice, options.speedup)
    if direct and len(direct) < len(search.space.candidates) and abs(calibration - 1) > 0.005:
        lines.append(f"the other candidates' speedups are scaled by {calibration:.2f}: what "
                     f"timing {', '.join(c.label for c in direct)} beside the teacher measured over its estimate")
    if choice not in timed:
        lines.append(f"the recommended configuration ({choice.label}) was predicted, not timed: the budget ran out; "
                     "give a larger --budget-minutes to time it")
    elif choice not in direct:
        lines.append(f"the recommended configuration ({choice.label}) was timed beside the reference only, not beside "
                     "the teacher: the budget ran out; its speedup is a product of two ratios, which can be 15% off; "
                     "give a larger --budget-minutes to confirm it")
    if restricted:
        lines.append("vocabulary candidates are timed with a model of the reduced vocabulary size"
                     + (" (a CTranslate2 vocabulary map restricts per batch; the reduced size approximates it)"
                        if options.engine == "ctranslate2" else ""))
    return lines


def confirmation_notes(estimates: dict[Candidate, float], speedups: dict[Candidate, float], choice: Candidate,
                       target: float) -> list[str]:
    """One line per confirmed candidate that is not the recommendation: it missed the target beside
    the teacher, or it met it and the recommendation keeps more capacity on its (calibrated) estimate."""
    lines = []
    for c, estimate in estimates.items():
        if c == choice:
            continue
        measured = f"{c.label} was estimated at {estimate:.2f}x and measured {speedups[c]:.2f}x beside the teacher"
        if speedups[c] < target:
            lines.append(f"{measured}, below the target, so it is not the recommendation")
        else:
            lines.append(f"{measured}; the recommendation, {choice.label}, keeps more capacity and reaches the target on "
                         "its estimate")
    return lines


def _why(choice: Candidate, meets: bool, speedups, target: float, candidates) -> str:
    """One line: why this candidate."""
    if not meets:
        return (f"no candidate reaches {target:g}x; the best reachable is {speedups[choice]:.2f}x ({choice.label}), "
                "the fastest configuration considered")
    more = [c for c in candidates if c.capacity_key() > choice.capacity_key()]
    if not more:
        return f"it keeps the teacher's full capacity among the candidates and reaches {speedups[choice]:.2f}x"
    closest = min(more, key=lambda c: c.capacity_key())
    return (f"the configuration with the most capacity that reaches {target:g}x ({speedups[choice]:.2f}x); the next one "
            f"up, {closest.label}, reaches {speedups[closest]:.2f}x")
