"""The cost model (server/targets/cost.py) through `taskrouter-analyze cost`: a monthly table of the kind
hosted-router write-ups publish ("700,000 classify, 250,000 Q&A and 50,000 reasoning requests a month:
routed vs one model"), from stated prices, volumes and tokens, to the cent. The prices are made up for
the test; the expected values are worked by hand below."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.analyze.cli import main
from server.analyze.cost import Stated, combine
from server.targets.cost import Load

CATALOG = """
models:
  frontier: {input_price_per_mtok: 2.50, output_price_per_mtok: 10.00}
  small: {input_price_per_mtok: 0.15, output_price_per_mtok: 0.60}
  reasoner: {input_price_per_mtok: 1.10, output_price_per_mtok: 4.40}
"""

# routed, then all on frontier (requests x (input tokens x $/Mtok in + output tokens x $/Mtok out) / 1e6):
# classify:  700,000 x (300 x 0.15 + 20 x 0.60) = $39.90;     700,000 x (300 x 2.5 + 20 x 10) = $665.00
# qa:        250,000 x (800 x 0.15 + 300 x 0.60) = $75.00;    250,000 x (800 x 2.5 + 300 x 10) = $1,250.00
# reasoning:  50,000 x (1500 x 1.10 + 1000 x 4.40) = $302.50;  50,000 x (1500 x 2.5 + 1000 x 10) = $687.50
# total: $417.40 vs $2,602.50, saving $2,185.10 = 83.96%
EXPECTED = """\
| task | requests / month | routed to | routed cost | all on frontier | saving | saving % |
|---|---:|---|---:|---:|---:|---:|
| classify | 700,000 | small | $39.90 | $665.00 | $625.10 | 94.0% |
| qa | 250,000 | small | $75.00 | $1,250.00 | $1,175.00 | 94.0% |
| reasoning | 50,000 | reasoner | $302.50 | $687.50 | $385.00 | 56.0% |
| **total** | 1,000,000 |  | $417.40 | $2,602.50 | $2,185.10 | 84.0% |
"""


def test_a_published_style_monthly_table_to_the_cent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    args = ["cost", "--catalog", str(catalog), "--baseline", "frontier"]
    for task, volume, tokens, model in (
        ("classify", "700,000", "300:20", "small"),
        ("qa", "250000", "800:300", "small"),
        ("reasoning", "50_000", "1500:1000", "reasoner"),
    ):
        args += ["--volume", f"{task}={volume}", "--tokens", f"{task}={tokens}", "--model", f"{task}={model}"]
    assert main(args) == 0
    assert capsys.readouterr().out == EXPECTED


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--volume", "qa=lots"], "--volume qa='lots': a number of requests"),
        (["--volume", "qa=10", "--tokens", "qa=800"], "write INPUT:OUTPUT tokens per request"),
        (["--volume", "qa=10", "--tokens", "qa=8:3"], "task 'qa' is not in the log: give --model for it"),
        (["--volume", "qa"], "--volume 'qa': write TASK=VALUE"),
        ([], "give a request log, or --volume/--tokens/--model for every task"),
    ],
)
def test_stated_loads_that_cannot_be_priced_are_refused_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    assert main(["cost", "--catalog", str(catalog), "--baseline", "frontier", *extra]) == 2
    assert message in capsys.readouterr().err


def test_stated_volume_keeps_the_measured_split_and_tokens() -> None:
    measured = [Load("qa", "small", 30, 100, 50), Load("qa", "frontier", 10, 200, 80)]
    loads = combine(measured, Stated({"qa": 1000}, {}, {}))
    assert [(x.model, x.requests, x.input_tokens, x.output_tokens) for x in loads] == [
        ("small", 750, 100, 50),
        ("frontier", 250, 200, 80),
    ]
    scaled = combine(measured, Stated({}, {"qa": (10, 5)}, {}), scale=2.0)
    assert [(x.requests, x.input_tokens, x.output_tokens) for x in scaled] == [(60, 10, 5), (20, 10, 5)]
