"""The tables and the plot of `benchmarks/attacks.py`: every ASR with its 95% interval, per defence."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def table(result: dict[str, Any]) -> str:
    """The Markdown table of docs/attacks.md: every figure with its 95% interval."""
    def cell(value, ci) -> str:
        return "-" if value is None else f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"

    head = ("| defence | ASR before | after white-box | after Ring-A-Bell | after Ring-A-Bell, no harm words "
            "| after adaptive | harmless fidelity | harmless agreement |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    missing = {"asr_after": None, "asr_after_ci": None}
    for name, r in result["rows"].items():
        wb, rb = r["whitebox"], r["ringabell"]
        rn, ad = r.get("ringabell-noharm") or missing, r.get("adaptive") or missing
        lines.append(f"| {name} | {cell(wb['asr_before'], wb['asr_before_ci'])} "
                     f"| {cell(wb['asr_after'], wb['asr_after_ci'])} | {cell(rb['asr_after'], rb['asr_after_ci'])} "
                     f"| {cell(rn['asr_after'], rn['asr_after_ci'])} | {cell(ad['asr_after'], ad['asr_after_ci'])} "
                     f"| {cell(r['harmless_fidelity']['value'], r['harmless_fidelity']['ci'])} "
                     f"| {cell(r['harmless_agreement']['value'], r['harmless_agreement']['ci'])} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """ASR before / after each attack per defence, with the intervals, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["rows"])
    series = [("before", "whitebox", "asr_before"), ("white-box", "whitebox", "asr_after"),
              ("Ring-A-Bell", "ringabell", "asr_after"), ("Ring-A-Bell, no harm words", "ringabell-noharm",
                                                          "asr_after"), ("adaptive", "adaptive", "asr_after")]
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=80)
    width = 0.8 / len(series)
    for n, (label, attack_name, key) in enumerate(series):
        cells = [result["rows"][d].get(attack_name) or {} for d in names]
        values = [c.get(key) or 0.0 for c in cells]
        cis = [c.get(key + "_ci") or [0.0, 0.0] for c in cells]
        err = [[v - c[0] for v, c in zip(values, cis)], [c[1] - v for v, c in zip(values, cis)]]
        ax.bar([i + (n - (len(series) - 1) / 2) * width for i in range(len(names))], values, width, yerr=err, label=label,
               capsize=2)
    ax.axhline(0.10, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("attack success rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6, ncol=5, loc="upper center", bbox_to_anchor=(0.5, 1.18), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
