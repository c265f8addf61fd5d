"""What the compute this app runs on costs per hour: a small price table for planning.

Figures are Azure **pay-as-you-go list prices for Linux VMs in East US, in USD per instance-hour**,
as of 2026-11 (`PRICES_AS_OF`). Azure ML adds no surcharge on compute: a managed online endpoint
deployment is billed as its instance type times its instance count for as long as it exists,
whether or not it receives traffic, and a training job for as long as its cluster node runs.

They are for planning and for showing what a leftover endpoint keeps costing (scripts/teardown.py),
not a bill: they leave out disks, networking, storage, taxes, other regions (most cost more),
reservations, savings plans and negotiated discounts, and Microsoft changes list prices. Check the
Azure pricing calculator or https://azure.microsoft.com/pricing/details/virtual-machines/linux/
before budgeting.

Which instance types, and why:

* the tutorial this app automates ("Fine-Tune and Integrate Custom Phi-3 Models with Prompt Flow
  in Azure AI Studio") fine-tunes on ``Standard_NC24ads_A100_v4`` (NCADSA100v4
  family, 1 x A100 80 GB) and serves on ``Standard_NC6s_v3`` (NCSv3 family, 1 x V100 16 GB) -
  the app's defaults ``TRAINING_INSTANCE_TYPE`` / ``SERVING_INSTANCE_TYPE``; both need a GPU
  quota request on a pay-as-you-go subscription, and the tutorial warns to delete the endpoint
  afterwards to avoid further charges;
* the larger sizes of those two families, the A100 ND-series, the T4 sizes (the cheap serving
  choice) and two CPU sizes (the Azure ML default CPU compute and a memory-optimised one);
* ``local``: the offline backend (devhost), which runs on this machine and costs nothing.

Keys are matched case-insensitively (`hourly_cost`); an instance type not in the table is
"unknown" - never guessed.
"""

from __future__ import annotations

from types import MappingProxyType

REGION = "East US"
CURRENCY = "USD"
PRICES_AS_OF = "2026-11"

PRICES_PER_HOUR: dict[str, float] = {
    # NCSv3: NVIDIA V100 16 GB. The tutorial's serving size (NC6s_v3, 1 GPU).
    "Standard_NC6s_v3": 3.06,
    "Standard_NC12s_v3": 6.12,
    "Standard_NC24s_v3": 12.24,
    # NCADSA100v4: NVIDIA A100 80 GB PCIe. The tutorial's fine-tuning size (NC24ads, 1 GPU).
    "Standard_NC24ads_A100_v4": 3.673,
    "Standard_NC48ads_A100_v4": 7.346,
    "Standard_NC96ads_A100_v4": 14.692,
    # NDv4: 8 x NVIDIA A100 40 GB SXM (multi-GPU training).
    "Standard_ND96asr_v4": 27.197,
    # NCasT4_v3: NVIDIA T4 16 GB, the low-cost inference sizes.
    "Standard_NC4as_T4_v3": 0.526,
    "Standard_NC8as_T4_v3": 0.752,
    "Standard_NC16as_T4_v3": 1.204,
    "Standard_NC64as_T4_v3": 4.352,
    # CPU: memory-optimised Esv3, and DSv2 (Azure ML's default CPU compute size).
    "Standard_E4s_v3": 0.252,
    "Standard_DS3_v2": 0.229,
    # The offline backend (BACKEND=local): this machine's CPU, no cloud charge.
    "local": 0.0,
}

_BY_LOWER = MappingProxyType({name.lower(): price for name, price in PRICES_PER_HOUR.items()})


def hourly_cost(instance_type: str, count: int = 1) -> float | None:
    """List price per hour of `count` instances of `instance_type` (USD, East US, Linux), or None
    if the instance type is not in the table. The name is matched case-insensitively, so
    "standard_nc6s_v3" is Standard_NC6s_v3. Rounded to 1/1000 of a dollar (float noise only)."""
    if count < 0:
        raise ValueError(f"instance count must not be negative, got {count}")
    price = _BY_LOWER.get(instance_type.strip().lower())
    if price is None:
        return None
    return round(price * count, 6)


def format_cost(value: float | None) -> str:
    """A price for people: `$3.06/h` (two decimals; three when the cents alone would hide part of
    the price, as in `$3.673/h`), `$0.00/h` for the free offline backend, `unknown` for None."""
    if value is None:
        return "unknown"
    text = f"{value:,.2f}"
    if round(value, 2) != round(value, 3):
        text = f"{value:,.3f}"
    return f"${text}/h"
