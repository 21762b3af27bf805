"""The evaluation's outputs: a Markdown table and the precision-recall plot (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TABLE_METRICS = ("mAP", "mAP@10", "mAP@100", "P@1", "P@5", "P@10", "R@100", "NDCG@10", "NDCG@100")


def quality_markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        "| dataset | model | index | re-ranking | " + " | ".join(TABLE_METRICS) + " |",
        "|---|---|---|---|" + "---|" * len(TABLE_METRICS),
    ]
    for r in document["records"]:
        values = " | ".join(f"{r[m]:.3f}" if m in r else "" for m in TABLE_METRICS)
        lines.append(f"| {r['dataset']} | {r['model']} | {r['index']} | {r['rerank']} | {values} |")
    return "\n".join(lines) + "\n"


def pr_plot(document: dict[str, Any], path: Path) -> None:
    """Every run's interpolated precision-recall curve on one figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 5), dpi=120)
    for r in document["records"]:
        curve = r["pr_curve"]
        label = f"{r['model']} · {r['index']} · {r['rerank']} (mAP {r['mAP']:.3f})"
        axes.plot(curve["recall"], curve["precision"], marker=".", label=label)
    axes.set_xlabel("recall")
    axes.set_ylabel("interpolated precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(f"Precision-recall, leave-one-out ({document['records'][0]['dataset']})")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def provenance_line(document: dict[str, Any]) -> str:
    """The first line of every results table: when, where, which code, which command."""
    machine_ = document["machine"]
    return (
        f"Measured {document['date'][:10]} on {machine_['cpu']} ({machine_['cores']} cores),"
        f" commit {document['commit']}, `{document['command']}`."
    )
