"""Privacy detection cost per request, beside the detector before the whole-body scan.

For chat bodies of about 1 KB, 32 KB and 512 KB (prose, code, numbers, a tool
schema; ASCII, and the same with accented and CJK text mixed in; the ordinary
prompt corpus is dense in numbers, a worst case), and the overhead benchmark's
plain 1 KB request, it times
``build_facts`` (validation + detection, as every request pays it) with detection
on and off, here and in the baseline revision (the commit before the whole-body
scan, by default), in the same run on the same bodies. The baseline is imported
in a subprocess from a copy of its ``sidecar/`` (``git archive``), so the package
keeps no old code. A masked request (an e-mail per message, ``privacy.mask``) is
timed too: it also pays the masking and the second scan.

    python tests/bench/privacy_detection.py [--baseline REV] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "sidecar" / "data" / "ordinary_prompts.txt"
SIZES = {"1 KB": 1024, "32 KB": 32 * 1024, "512 KB": 512 * 1024}
MIXED = " Café crème, naïve façade; 東京の天気は晴れです。 Grüße aus München. "

# The timing code, run here and in the baseline's subprocess alike.
TIMER = """
import json, sys, timeit
from aegis.sidecar.contract import PrivacySpec
from aegis.sidecar.request.facts import build_facts

bodies = json.loads(sys.stdin.read())
specs = {"on": PrivacySpec(), "off": PrivacySpec(detect=False)}
if "mask" in PrivacySpec.model_fields:
    specs["masked"] = PrivacySpec(mask=["pii"])
out = {}
for name, body in bodies.items():
    for label, spec in specs.items():
        if label == "masked" and not name.endswith("+pii"):
            continue
        if label != "masked" and name.endswith("+pii"):
            continue
        call = lambda: build_facts("chat", body, {}, spec)
        number = max(1, int(0.2 / max(timeit.timeit(call, number=1), 1e-6)))
        best = min(timeit.repeat(call, number=number, repeat=REPEAT)) / number
        out[f"{name}|{label}"] = best
print(json.dumps(out))
"""


def body_of(size: int, mixed: bool, seed: int, pii: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    lines = [
        line.replace("\\n", "\n")
        for line in CORPUS.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant."}]
    total = 0
    while total < size:
        text = " ".join(rng.choice(lines) for _ in range(8))
        if mixed:
            text += MIXED
        if pii:
            text += f" Reply to user{len(messages)}@example.com."
        messages.append({"role": "user" if len(messages) % 2 else "assistant", "content": text})
        total += len(text.encode())
    tool = {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look up an order by its number.",
            "parameters": {
                "type": "object",
                "properties": {"order": {"type": "string", "description": "Order number"}},
            },
        },
    }
    return {"model": "auto", "messages": messages, "tools": [tool], "user": "team-7"}


def measure(sidecar_root: Path, bodies: dict[str, Any], repeat: int) -> dict[str, float]:
    """Time build_facts with the ``aegis.sidecar`` found at ``sidecar_root``."""
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "aegis"
        package.mkdir()
        (package / "sidecar").symlink_to(sidecar_root)
        done = subprocess.run(
            [sys.executable, "-c", TIMER.replace("REPEAT", str(repeat))],
            input=json.dumps(bodies),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"},
        )
    return {k: float(v) for k, v in json.loads(done.stdout).items()}


def baseline_revision() -> str:
    """The parent of the commit that added the normaliser (before the whole-body scan)."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "sidecar/request/normalise.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise SystemExit("cannot find the baseline revision; pass --baseline REV")
    return f"{added[-1]}~1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision to compare with")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 2 if args.quick else 5
    revision = args.baseline or baseline_revision()
    # The overhead benchmark's request: plain prose, no numbers.
    prose = "Summarise the ticket about the delayed delivery " * 20
    bodies: dict[str, Any] = {
        "1 KB prose": {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant for the support team."},
                {"role": "user", "content": prose},
            ],
        }
    }
    for label, size in SIZES.items():
        bodies[f"{label} ascii"] = body_of(size, False, size)
        bodies[f"{label} mixed"] = body_of(size, True, size)
        bodies[f"{label} ascii+pii"] = body_of(size, False, size, pii=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", revision, "sidecar"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        before = measure(Path(tmp) / "sidecar", bodies, repeat)
    now = measure(ROOT / "sidecar", bodies, repeat)
    print(f"build_facts per request (best of {repeat}); baseline {revision}")
    header = f"{'body':18} {'bytes':>8} {'baseline on':>12} {'now on':>10} {'now off':>10}"
    print(header + f" {'now masked':>11} {'ratio on':>9}")
    for name, body in bodies.items():
        if name.endswith("+pii"):
            continue
        size = len(json.dumps(body).encode())
        old, new, off = before[f"{name}|on"], now[f"{name}|on"], now[f"{name}|off"]
        masked = now.get(f"{name}+pii|masked")
        masked_text = f"{masked * 1e3:9.3f}ms" if masked is not None else f"{'-':>11}"
        print(
            f"{name:18} {size:8d} {old * 1e3:10.3f}ms {new * 1e3:8.3f}ms {off * 1e3:8.3f}ms "
            f"{masked_text} {new / old:8.2f}x"
        )
    for name, body in bodies.items():
        if name.endswith("+pii"):
            continue
        size = len(json.dumps(body).encode())
        new = now[f"{name}|on"] - now[f"{name}|off"]
        print(f"detection alone now, {name}: {new * 1e6 / (size / 1024):.1f} us per KB")


if __name__ == "__main__":
    main()
