"""False positives: ordinary prompts (code, maths, product and order numbers, dates,
version strings, machine addresses) are not taken for personal data.

A false positive keeps a request local for nothing (quality and cost), so the rate
over the corpus in ``data/ordinary_prompts.txt`` must stay below 1 %. The test
prints the rate and the prompts it flagged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.sidecar.contract import PrivacySpec
from aegis.sidecar.request import assess

CORPUS = Path(__file__).parent / "data" / "ordinary_prompts.txt"


def prompts() -> list[str]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [line.replace("\\n", "\n") for line in lines if line and not line.startswith("#")]


def test_false_positive_rate_is_below_one_percent(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = prompts()
    assert len(corpus) >= 300
    privacy = PrivacySpec()
    flagged = []
    for text in corpus:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        decision = assess(body, None, None, privacy)
        if decision.detected:
            flagged.append((text, sorted(decision.detected)))
    rate = len(flagged) / len(corpus)
    with capsys.disabled():
        print(f"\nfalse positives: {len(flagged)} of {len(corpus)} ordinary prompts ({rate:.2%})")
        for text, detectors in flagged:
            print(f"  {detectors}: {text[:100]!r}")
    assert rate < 0.01
