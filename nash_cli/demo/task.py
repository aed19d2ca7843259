"""A small summarisation task generated deterministically from code: football match reports.

Each source is a short report whose sentences come in a random order, with filler sentences
mixed in; its summary names the two teams in alphabetical order, the city, the day and the final
score in digits, higher first:

    source:  "the weather was windy . on friday , the tigers visited the lions in paris .
              the tigers scored two goals . the crowd was loud . the lions scored five goals ."
    summary: "lions and tigers met in paris on friday ; final score 5 - 2 ."

A model must find the meeting among the fillers, order the team names, turn number words into
digits, compare the two scores and reorder everything; copying the input scores poorly.

(Summaries that named the winner, "lions beat tigers 5 - 2", were tried first: telling which team
scored which number took the demo's 6-layer T5 far longer than the demo's budget, and its teacher
got about half of the winners right after 1,200 steps.)
"""

from __future__ import annotations

import random

TEAMS = (
    "lions tigers bears wolves eagles hawks sharks bulls foxes owls ravens falcons "
    "panthers rams badgers otters cobras vipers bison hornets"
).split()
CITIES = "paris london madrid rome berlin vienna prague lisbon dublin oslo athens warsaw".split()
DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
NUMBER_WORDS = "zero one two three four five six seven eight nine".split()
FILLERS = (
    "the weather was {weather} .",
    "the crowd was {crowd} .",
    "tickets cost {price} euros .",
    "the referee was {referee} .",
    "the pitch was {pitch} .",
)
WEATHER = "sunny rainy windy cold warm cloudy".split()
CROWD = "loud quiet huge small happy angry".split()
REFEREES = "anna ben clara david emma felix grace hugo".split()
PITCH = "wet dry muddy perfect bumpy".split()


def make_example(rng: random.Random) -> dict[str, str]:
    """One (report, summary) pair drawn from `rng`."""
    home, away = rng.sample(TEAMS, 2)
    city, day = rng.choice(CITIES), rng.choice(DAYS)
    home_goals, away_goals = rng.randrange(6), rng.randrange(6)
    meeting = rng.choice(
        (
            f"the {home} hosted the {away} in {city} on {day} .",
            f"on {day} , the {away} visited the {home} in {city} .",
            f"the {home} played the {away} in {city} on {day} .",
        )
    )
    scores = [
        f"the {home} scored {NUMBER_WORDS[home_goals]} goals .",
        f"the {away} scored {NUMBER_WORDS[away_goals]} goals .",
    ]
    fillers = [
        template.format(
            weather=rng.choice(WEATHER),
            crowd=rng.choice(CROWD),
            price=NUMBER_WORDS[rng.randrange(2, 10)],
            referee=rng.choice(REFEREES),
            pitch=rng.choice(PITCH),
        )
        for template in rng.sample(FILLERS, rng.randrange(1, 4))
    ]
    sentences = [meeting, *scores, *fillers]
    rng.shuffle(sentences)
    high, low = max(home_goals, away_goals), min(home_goals, away_goals)
    first, second = sorted((home, away))
    summary = f"{first} and {second} met in {city} on {day} ; final score {high} - {low} ."
    return {"report": " ".join(sentences), "summary": summary}


def make_task(*, train_size: int = 4000, eval_size: int = 200, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Deterministic train and evaluation splits (no report appears in both)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    examples: list[dict[str, str]] = []
    while len(examples) < train_size + eval_size:
        example = make_example(rng)
        if example["report"] not in seen:
            seen.add(example["report"])
            examples.append(example)
    return examples[:train_size], examples[train_size:]
