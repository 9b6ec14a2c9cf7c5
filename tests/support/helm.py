"""The Helm chart rendered by the real Helm engine (helm-python-sdk)."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import yaml

from tests.support import ROOT

CHART = ROOT / "charts" / "mopar"
ALL_ON = yaml.safe_load((CHART / "ci" / "all-on-values.yaml").read_text())


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name="mopar", namespace="mopar-system", is_install=True)
    return [d for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]  # fmt: skip
