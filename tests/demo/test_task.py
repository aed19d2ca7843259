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
        goals = dict(
            (team, NUMBER_WORDS.index(word))
            for team, word in re.findall(r"the (\w+) scored (\w+) goals", row["report"])
        )
        (home, h), (away, a) = goals.items()
        summary = row["summary"]
        if h == a:
            assert " drew " in summary and f"{h} - {a}" in summary
        else:
            winner, loser = (home, away) if h > a else (away, home)
            assert summary.startswith(f"{winner} beat {loser} {max(h, a)} - {min(h, a)} in ")
        assert summary.split(" in ")[1].split(" on ")[0] in row["report"]
        # the summary is not a span of the report: digits and word order are new
        assert summary not in row["report"]
