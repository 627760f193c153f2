"""What produced a leaderboard's numbers, from the runs a store records: the last run's provenance
(versions, device, seed, suite hash, samples digest, date) as data and as the lines under a leaderboard,
and the model cards (weights hash and origin, training time) the runs that loaded each model recorded."""

from __future__ import annotations

import time
from typing import Any

from ..metrics import SuiteResults


def provenance(res: SuiteResults) -> dict[str, Any]:
    """What produced these numbers: versions, device, seed, suite hash, samples digest, date (last run).

    A merge records a run of its own (status ``merged``) that lists its sources and computed
    nothing: the footer describes the last run that did compute, so that a store published right
    after ``robench merge`` still names the versions and suite hash behind its numbers."""
    if not res.runs:
        return {}
    last = next((r for r in reversed(res.runs) if r.get("status") != "merged"), res.runs[-1])
    p = last["provenance"]
    return {
        "versions": p.get("versions", {}), "device": p.get("device"), "seed": p.get("seed"),
        "suite_hash": p.get("suite_hash"), "samples_digest": res.sample_digest, "git_commit": p.get("git_commit"),
        "date": p.get("date") or time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started"])),
        "runs": len(res.runs), "plugins": p.get("plugins", {}), "platform": p.get("platform"),
    }


def provenance_lines(res: SuiteResults) -> list[str]:
    p = provenance(res)
    if not p:
        return []
    v = p["versions"]
    out = [f"robench {v.get('robench')} · torch {v.get('torch')} · numpy {v.get('numpy')} · python {v.get('python')}"
           + "".join(f" · {k} {v[k]}" for k in ("foolbox", "adversarial-robustness-toolbox", "tensorflow", "larq") if k in v)
           + f" · device {p['device']} · seed {p['seed']} · suite hash {p['suite_hash']}"
           + f" · samples digest {p['samples_digest']} · git {str(p['git_commit'])[:10]} · {p['runs']} run(s), last {p['date']}"]
    if p["plugins"]:
        out.append("plugins: " + ", ".join(f"{k} ({val})" for k, val in sorted(p["plugins"].items())))
    return out


def model_cards(res: SuiteResults) -> dict[str, dict[str, Any]]:
    """Per model, the card the last run that loaded it recorded in its provenance (``"models"``:
    key, weights_sha256, weights_origin, train_seconds, description); models no run recorded are absent."""
    from ..provenance import run_cards

    cards: dict[str, dict[str, Any]] = {}
    for _, name, card in run_cards(res.runs):  # in run order: a later run's card replaces an earlier one
        cards[name] = card
    return cards
