"""The lab's one table of Azure prices (lab_helpers.costs): dated, summed right, and the only
source of the figures that docs/azure.md and notebooks 02 and 06 show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab_helpers import azure, costs

ROOT = Path(__file__).resolve().parent.parent


def test_the_table_is_dated_and_covers_the_cluster_azure_creates():
    assert re.fullmatch(r"20\d\d(-\d\d)?", costs.AS_OF)
    items = costs.cluster_prices()
    nodes = next(p for p in items if p.item.startswith("node VM"))
    assert nodes.quantity == azure.NODE_COUNT and azure.VM_SIZE in nodes.item
    assert costs.per_hour() == pytest.approx(sum(p.usd_per_hour * p.quantity for p in items))
    assert costs.per_hour(registry=True) > costs.per_hour()


def test_the_scenarios_are_hours_times_the_hourly_cost():
    hourly = costs.per_hour()
    table = costs.scenarios()
    for name, hours in costs.SCENARIOS.items():
        assert table[name] == pytest.approx(hours * hourly, abs=0.01)
    assert costs.SCENARIOS["a weekend, forgotten (Fri 18:00 to Mon 09:00)"] == 6 + 24 + 24 + 9


def test_an_unknown_node_size_is_one_sentence():
    with pytest.raises(ValueError, match="no price for 'Standard_XL'"):
        costs.cluster_prices(vm_size="Standard_XL")


def test_docs_azure_shows_exactly_the_table():
    text = (ROOT / "docs" / "azure.md").read_text()
    assert costs.BEGIN in text and costs.END in text
    assert costs.in_doc(text) == text, "run `python -m lab_helpers.costs --write`"
    assert costs.markdown_table() in text


def test_the_notebooks_take_their_prices_from_the_table():
    for name in ("02_kubernetes_on_aks", "06_teardown_and_costs"):
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        sources = "\n".join("".join(c["source"]) for c in nb["cells"])
        assert "costs." in sources, name
        # No price typed into the prose or the code: every US$ figure is computed.
        assert not re.findall(r"\$\d", sources.replace("US${", "")), name
