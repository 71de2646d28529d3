"""What the lab costs on Azure: one dated table of prices, and the sums made from it.

Notebooks 02 and 06, `docs/azure.md` and `docs/teaching.md` take their figures from here
(a test checks that the docs show this table). The prices are pay-as-you-go list prices in US
dollars for Linux in East US, as Azure published them in `AS_OF`; other regions differ by
a few per cent to a third, and prices change. Check the current ones in the pricing calculator
(`CALCULATOR`) before a class, and your spending under *Cost Management* in the portal:

    from lab_helpers import costs

    costs.cluster_table()                  # the lab's AKS cluster, item by item, per hour
    costs.scenarios()                      # a 3-hour session, a day, a forgotten weekend...

Command line: `python -m lab_helpers.costs` prints the Markdown table of `docs/azure.md`;
`--write` puts it there (between its `costs:begin` and `costs:end` markers).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .azure import NODE_COUNT, VM_SIZE

AS_OF = "2025"
REGION = "East US"
CALCULATOR = "https://azure.microsoft.com/pricing/calculator/"
HOURS_PER_MONTH = 730  # what Azure bills a month of a resource that always exists

# Virtual machines (Linux, pay-as-you-go), US$ per hour: the lab's nodes, and the class lab's.
VM_PER_HOUR = {
    "Standard_B2s_v2": 0.0832,  # 2 vCPU, 8 GiB (burstable, Bsv2)
    "Standard_D4s_v5": 0.192,  # 4 vCPU, 16 GiB
    "Standard_D8s_v5": 0.384,  # 8 vCPU, 32 GiB
    "Standard_D16s_v5": 0.768,  # 16 vCPU, 64 GiB
}


@dataclass(frozen=True)
class Price:
    """One billed item: US$ per hour of existence, for `quantity` of it."""

    item: str
    usd_per_hour: float
    quantity: int = 1
    note: str = ""

    @property
    def total_per_hour(self) -> float:
        return self.usd_per_hour * self.quantity


def cluster_prices(
    node_count: int = NODE_COUNT, vm_size: str = VM_SIZE, registry: bool = False
) -> list[Price]:
    """The billed items of the lab's AKS cluster (`lab_helpers.azure.create_cluster`) while
    it exists, with the lab deployed; `registry=True` adds an Azure Container Registry
    (only needed when you build your own images)."""
    if vm_size not in VM_PER_HOUR:
        known = ", ".join(VM_PER_HOUR)
        raise ValueError(f"no price for {vm_size!r} in lab_helpers.costs: use one of {known}")
    items = [
        Price("AKS control plane, free tier", 0.0, 1, "no uptime guarantee: fine for learning"),
        Price(
            f"node VM {vm_size}",
            VM_PER_HOUR[vm_size],
            node_count,
            "the machines that run the pods; billed while they run",
        ),
        Price(
            "node OS disk, 128 GiB Premium SSD (P10)",
            0.027,
            node_count,
            "AKS's default disk per node; billed even while the nodes are stopped",
        ),
        Price("Standard load balancer", 0.025, 1, "AKS's outbound traffic and the dashboard"),
        Price("public IP address, Standard", 0.005, 2, "the nodes' way out, and the dashboard's"),
        Price(
            "InfluxDB's and NATS's disks, Standard SSD (E1)",
            0.0004,
            2,
            "the StatefulSets' volumes (managed-csi)",
        ),
    ]
    if registry:
        items.append(Price("Container Registry, Basic", 0.0069, 1, "only to build your own images"))
    return items


def cluster_table(
    node_count: int = NODE_COUNT, vm_size: str = VM_SIZE, registry: bool = False
) -> pd.DataFrame:
    """`cluster_prices` as a DataFrame (one row per item) with a total per hour."""
    rows = [
        {
            "item": p.item,
            "quantity": p.quantity,
            "usd_per_hour_each": p.usd_per_hour,
            "usd_per_hour": round(p.total_per_hour, 4),
            "note": p.note,
        }
        for p in cluster_prices(node_count, vm_size, registry)
    ]
    return pd.DataFrame(rows).set_index("item")


def per_hour(node_count: int = NODE_COUNT, vm_size: str = VM_SIZE, registry: bool = False) -> float:
    """US$ an hour for everything the lab's cluster bills while it exists."""
    return sum(p.total_per_hour for p in cluster_prices(node_count, vm_size, registry))


SCENARIOS = {
    "a 3-hour lab session": 3,
    "a day": 24,
    "a weekend, forgotten (Fri 18:00 to Mon 09:00)": 63,
    "a month, forgotten": HOURS_PER_MONTH,
}


def scenarios(hourly: float | None = None) -> pd.Series:
    """What the cluster costs for a session, a day, a forgotten weekend and month (US$)."""
    hourly = per_hour() if hourly is None else hourly
    return pd.Series(
        {name: round(hours * hourly, 2) for name, hours in SCENARIOS.items()}, name="about US$"
    )


def markdown_table() -> str:
    """The price table of `docs/azure.md`, made from `cluster_prices`."""
    lines = [
        "| item | quantity | US$ per hour each | US$ per hour | note |",
        "|---|---|---|---|---|",
    ]
    for p in cluster_prices(registry=True):
        each, total = f"{p.usd_per_hour:.4f}", f"{p.total_per_hour:.4f}"
        lines.append(f"| {p.item} | {p.quantity} | {each} | {total} | {p.note} |")
    without, with_acr = per_hour(), per_hour(registry=True)
    lines.append(
        f"| **all together** | | | **{without:.3f}** ({with_acr:.3f} with the registry) | |"
    )
    day = scenarios()
    lines += [
        "",
        f"Pay-as-you-go list prices for Linux in {REGION}, as published in {AS_OF}: "
        f"a 3-hour session costs about US${day.iloc[0]:.2f}, a day about US${day.iloc[1]:.2f}, "
        f"a forgotten month about US${day.iloc[3]:.0f}.",
    ]
    return "\n".join(lines)


DOC = Path(__file__).resolve().parent.parent / "docs" / "azure.md"
BEGIN, END = "<!-- costs:begin -->", "<!-- costs:end -->"


def in_doc(text: str) -> str:
    """`text` with the table between the markers replaced by `markdown_table`."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write"]:
        DOC.write_text(in_doc(DOC.read_text()))
        print(f"wrote the price table into {DOC}")
    else:
        print(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
