"""The demo task: deterministic, structured, and not solvable by copying."""

from __future__ import annotations

import re

from nash_cli.demo.task import NUMBER_WORDS, make_task


def test_deterministic_and_disjoint():
    train_a, eval_a = make_task(train_size=300, eval_size=50, seed=3)
    train_b, eval_b = make_task(train_size=300, eval_size=50, seed=3)
    assert train_a == train_b and eval_a == eval_b
    assert not {r["report"] for r in train_a} & {r["report"] for r in eval_a}
    assert make_task(train_size=50, eval_size=5, seed=4)[0] != train_a[:50]


def test_summaries_follow_from_the_reports():
    train, _ = make_task(train_size=500, eval_size=0, seed=0)
    for row in train:
        goals = [NUMBER_WORDS.index(word) for _, word in re.findall(r"the (\w+) scored (\w+) goals", row["report"])]
        teams = sorted(team for team, _ in re.findall(r"the (\w+) scored (\w+) goals", row["report"]))
        city = re.search(r" in (\w+)(?: on (\w+))? \.", row["report"]).group(1)
        summary = row["summary"]
        assert summary.startswith(f"{teams[0]} and {teams[1]} met in {city} on ")
        assert summary.endswith(f"; final score {max(goals)} - {min(goals)} .")
        # the summary is not a span of the report: digits, order and wording are new
        assert summary not in row["report"]
