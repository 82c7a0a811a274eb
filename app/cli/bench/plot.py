"""``usher bench``'s plot: completions per second over time for both systems, and the
distribution of Usher's hand-offs (matplotlib, the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path

from app.cli.bench.report import Report
from app.errors import UsherError


def plot(report: Report, path: Path) -> Path:
    """Completions per second over time for both systems, and the hand-off distribution."""
    try:
        import matplotlib
    except ImportError:
        raise UsherError("the plot needs matplotlib: pip install -e '.[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for system, series in report.timeline.items():
        rate.plot([i * 0.5 for i in range(len(series))], series, label=system)
    rate.set_xlabel("seconds since the first request")
    rate.set_ylabel("completions / s")
    rate.set_title("throughput")
    rate.legend()
    for label, series, color in (
        ("under the load (grants wait for a process)", report.handoffs_ms, "tab:blue"),
        ("a free process waiting", report.idle_handoffs, "tab:green"),
    ):
        values = sorted(series)
        if values:
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            latency.plot(values, fractions, label=label, color=color)
    latency.set_xscale("log")
    latency.legend(loc="lower right")
    latency.set_xlabel("hand-off ms (slot freed -> next of the line running)")
    latency.set_ylabel("fraction of hand-offs")
    latency.set_title("Usher hand-off latency (CDF)")
    latency.grid(True, which="both", alpha=0.3)
    figure.suptitle(
        f"{report.runs[0].executions:,} executions, {report.actions} actions x limit "
        f"{report.limit}, {report.broker}: Usher {report.ratio:.2f}x plain Celery"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    report.plot = str(path)
    return path
