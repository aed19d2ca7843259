"""What the documentation claims about where nash's choices come from."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_distillation_weights_are_nash_own_choice_not_the_references():
    """0.5 CE + 1.0 T^2 KL + 0.001 hidden MSE is nash's choice: CoFi's `distill_ce_loss_alpha = 0.5`
    weights its KL (no label cross-entropy while distilling), and NASH's official trainer uses label
    cross-entropy and the Lagrangian only. No page may attribute nash's weights to them."""
    method = (DOCS / "method.md").read_text()
    section = " ".join(method.split("## The training objective", 1)[1].split("\n## ", 1)[0].split())
    assert "nash's own choice" in section
    assert "distill_ce_loss_alpha = 0.5" in section and "weights the KL" in section
    assert "official trainer" in section and "label cross-entropy and the Lagrangian only" in section
    for page in sorted(DOCS.glob("*.md")):
        for line in page.read_text().splitlines():
            if re.search(r"alpha[_-]ce\W+0\.5", line):
                assert not re.search(r"\breference\b", line), f"{page.name}: {line}"
