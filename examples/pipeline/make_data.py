#!/usr/bin/env python3
"""Regenerates data/*.csv: three quarters of sales orders, with a few dirty rows.

Deterministic (seeded), so the example's expected report never changes. Dirty rows test the
clean step: padded or lower-case regions, unknown regions, bad dates, bad numbers, blanks.
"""
import random
from datetime import date, timedelta
from pathlib import Path

PRODUCTS = {
    "Widget": 4.99, "Gadget": 19.95, "Sprocket": 2.50, "Gizmo": 34.00, "Doohickey": 7.25,
    "Flange": 1.10, "Bracket": 3.75, "Valve": 12.40, "Gasket": 0.95, "Bearing": 5.60,
}
REGIONS = ["North", "South", "East", "West"]
QUARTERS = [("2026-q1", date(2026, 1, 1)), ("2026-q2", date(2026, 4, 1)), ("2026-q3", date(2026, 7, 1))]


def dirty(rng, row):
    kind = rng.randrange(6)
    d, region, product, units, price = row
    if kind == 0:
        return (d, f"  {region.lower()} ", product, units, price)  # fixable: normalised
    if kind == 1:
        return (d, "Central", product, units, price)  # unknown region
    if kind == 2:
        return ("2026-13-40", region, product, units, price)  # bad date
    if kind == 3:
        return (d, region, product, "many", price)  # bad units
    if kind == 4:
        return (d, region, "", units, price)  # missing product
    return (d, region, product, units, "n/a")  # bad price


def main():
    rng = random.Random(20261126)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, start in QUARTERS:
        lines = ["order_date,region,product,units,unit_price"]
        for _ in range(2000):
            d = start + timedelta(days=rng.randrange(90))
            product = rng.choice(list(PRODUCTS))
            row = (d.isoformat(), rng.choice(REGIONS), product, rng.randint(1, 40),
                   f"{PRODUCTS[product] * rng.uniform(0.9, 1.1):.2f}")
            if rng.random() < 0.03:
                row = dirty(rng, row)
            lines.append(",".join(str(x) for x in row))
        (out / f"sales-{name}.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
