"""What the image pins: docker/constraints.txt, read once for the Dockerfile tests."""

from __future__ import annotations

from tests.chart.kube import ROOT

CONSTRAINTS = ROOT / "docker" / "constraints.txt"


def distribution_key(name: str) -> str:
    """A distribution name as pip compares them (PEP 503 normalisation)."""
    return name.lower().replace("_", "-").replace(".", "-")


def constraint_pins() -> dict[str, str]:
    """Normalised distribution name -> exact version; a line that is not ``name==version`` fails."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"docker/constraints.txt: not an exact pin: {line}"
            pins[distribution_key(name)] = version
    return pins
